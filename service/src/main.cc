// kvtierd: the kvtier daemon. Options come from the embedded defaults, then the TOML config file
// (--config), then command-line flags (--section.key=value); `kvtierd --help` lists every option
// with its current value. The token comes from server.token_file or the KVTIER_TOKEN environment
// variable and is never logged.
//
// Signals: SIGTERM or SIGINT drains gracefully (health NOT_SERVING, in-flight calls finish,
// RocksDB closes) and exits 0.
#include <malloc.h>
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include <CLI/CLI.hpp>
#include <grpcpp/grpcpp.h>

#include "grpc/health/v1/health.grpc.pb.h"

#include "kvtier/common/logging.h"
#include "kvtier/service/config.h"
#include "kvtier/service/daemon.h"
#include "kvtier/service/options.h"

namespace {

using kvtier::service::ConfigField;
using kvtier::service::DaemonOptions;

void AddFlag(CLI::App& app, const ConfigField& f) {
  std::visit(
      [&](auto* target) {
        app.add_option("--" + f.name, *target, f.help)
            ->capture_default_str()
            ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
      },
      f.target);
}

// --health-check: asks the daemon at server.unix_socket (or server.tcp_address when the socket is
// off) for grpc.health.v1 status. Exit 0 when SERVING, 1 otherwise. For probes and scripts.
int HealthCheck(const DaemonOptions& o) {
  const std::string target =
      !o.server.unix_socket.empty() ? "unix:" + o.server.unix_socket : o.server.tcp_address;
  if (!o.server.tls_cert_file.empty() && o.server.unix_socket.empty()) {
    std::fprintf(stderr, "kvtierd --health-check: use the Unix socket (TLS probes unsupported)\n");
    return 1;
  }
  auto stub = grpc::health::v1::Health::NewStub(
      grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  grpc::health::v1::HealthCheckRequest req;
  grpc::health::v1::HealthCheckResponse resp;
  grpc::Status s = stub->Check(&ctx, req, &resp);
  if (!s.ok()) {
    std::printf("%s: unreachable (%s)\n", target.c_str(), s.error_message().c_str());
    return 1;
  }
  std::printf("%s: %s\n", target.c_str(),
              grpc::health::v1::HealthCheckResponse::ServingStatus_Name(resp.status()).c_str());
  return resp.status() == grpc::health::v1::HealthCheckResponse::SERVING ? 0 : 1;
}

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ' ||
                        s.back() == '\t')) {
    s.pop_back();
  }
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  // Values of up to tens of MiB pass through every Put and Get. Keep such buffers on the heap and
  // keep freed memory for reuse (glibc would otherwise mmap and unmap each one, paying a page
  // fault per 4 KiB on every call).
  mallopt(M_MMAP_THRESHOLD, 256 << 20);
  mallopt(M_TRIM_THRESHOLD, 512 << 20);

  DaemonOptions options;

  // Pass 1: only --config, so that flags given on the command line override the file.
  std::string config_path;
  {
    CLI::App pre;
    pre.set_help_flag();
    pre.allow_extras();
    pre.add_option("--config", config_path);
    try {
      pre.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
      return pre.exit(e);
    }
  }
  if (!config_path.empty()) {
    absl::Status s = kvtier::service::ApplyConfigFile(config_path, &options);
    if (!s.ok()) {
      std::fprintf(stderr, "kvtierd: %s\n", std::string(s.message()).c_str());
      return 2;
    }
  }

  // Pass 2: every option as a flag.
  CLI::App app{
      "kvtierd: kvtier's KV-cache memory daemon (compressed KV chunks across GPU, host and "
      "RocksDB tiers, served over gRPC).\n"
      "Defaults need nothing but the binary: gRPC on unix:./data/kvtierd.sock and "
      "127.0.0.1:7470, metrics on http://127.0.0.1:7471/metrics, host tier + RocksDB under "
      "./data, a GPU tier when a GPU is visible. Options: defaults < --config file (TOML, "
      "[section] key = value) < flags. Token: server.token_file or $KVTIER_TOKEN. "
      "docs/OPERATIONS.md has the full reference.",
      "kvtierd"};
  app.add_option("--config", config_path, "TOML config file (read before the other flags)");
  std::vector<ConfigField> fields = kvtier::service::ConfigFields(&options);
  for (const ConfigField& f : fields) AddFlag(app, f);
  bool print_config = false;
  bool health_check = false;
  app.add_flag("--health-check", health_check,
               "Ask the running daemon (server.unix_socket) whether it is SERVING; exit 0 if so");
  app.add_flag("--print-config", print_config,
               "Print the effective configuration as a TOML config file (with each option's "
               "help as a comment) and exit");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (print_config) {
    std::printf("# kvtierd configuration (kvtierd --print-config). Load with --config FILE.\n");
    for (const ConfigField& f : fields) {
      std::printf("\n# %s\n", f.help.c_str());
      std::visit(
          [&](auto* target) {
            using T = std::remove_pointer_t<decltype(target)>;
            if constexpr (std::is_same_v<T, std::string>) {
              std::printf("%s = \"%s\"\n", f.name.c_str(), target->c_str());
            } else if constexpr (std::is_same_v<T, bool>) {
              std::printf("%s = %s\n", f.name.c_str(), *target ? "true" : "false");
            } else {
              std::printf("%s = %s\n", f.name.c_str(), std::to_string(*target).c_str());
            }
          },
          f.target);
    }
    return 0;
  }

  if (health_check) return HealthCheck(options);

  kvtier::LogLevel level;
  if (!kvtier::ParseLogLevel(options.logging.level, &level).ok()) {
    std::fprintf(stderr, "kvtierd: logging.level: unknown level '%s'\n",
                 options.logging.level.c_str());
    return 2;
  }
  kvtier::SetLogLevel(level);

  if (!options.server.token_file.empty()) {
    std::ifstream in(options.server.token_file);
    if (!in) {
      std::fprintf(stderr, "kvtierd: cannot read server.token_file %s\n",
                   options.server.token_file.c_str());
      return 2;
    }
    std::string line;
    std::getline(in, line);
    options.server.token = Trim(line);
    if (options.server.token.empty()) {
      std::fprintf(stderr, "kvtierd: server.token_file %s is empty\n",
                   options.server.token_file.c_str());
      return 2;
    }
  } else if (const char* env = std::getenv("KVTIER_TOKEN"); env != nullptr && *env != '\0') {
    options.server.token = env;
  }

  // Block the shutdown signals in every thread; main waits for them below.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  auto daemon = kvtier::service::Daemon::Start(options);
  if (!daemon.ok()) {
    KVTIER_LOG(ERROR, "kvtierd cannot start: {}", daemon.status().ToString());
    return 1;
  }
  int sig = 0;
  sigwait(&signals, &sig);
  KVTIER_LOG(INFO, "signal {} received: shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");
  (*daemon)->Shutdown();
  daemon->reset();
  KVTIER_LOG(INFO, "kvtierd stopped");
  return 0;
}
