// kvtierd configuration: the table of every option (dotted name, help with unit and default,
// where it lives in DaemonOptions), used for both the TOML config file and the command-line flags
// (--<dotted.name>=value), so the two can never disagree. Only service/src/main.cc reads a file or
// flags; tests use ApplyConfigText.
//
// Thread-safety: functions are reentrant; the returned fields point into the DaemonOptions passed.
#ifndef KVTIER_SERVICE_CONFIG_H_
#define KVTIER_SERVICE_CONFIG_H_

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "kvtier/service/options.h"

namespace kvtier::service {

struct ConfigField {
  std::string name;  // "server.unix_socket", "storage.host.capacity_bytes", ...
  std::string help;  // meaning and unit (the default is shown from the current value)
  std::variant<std::string*, bool*, uint32_t*, uint64_t*, int*, int64_t*, double*> target;
};

// Every configurable option of `options` (the token is not among them: it comes from
// server.token_file or the KVTIER_TOKEN environment variable, read by main).
std::vector<ConfigField> ConfigFields(DaemonOptions* options);

// Applies a TOML document: tables are sections ([server], [storage.host], ...). Unknown keys and
// wrong types are InvalidArgument naming the key (typos must not pass silently).
absl::Status ApplyConfigText(const std::string& toml_text, const std::string& source_name,
                             DaemonOptions* options);
absl::Status ApplyConfigFile(const std::string& path, DaemonOptions* options);

}  // namespace kvtier::service

#endif  // KVTIER_SERVICE_CONFIG_H_
