#include "daemon_process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"

namespace kvtier::testing {

TempDir::TempDir() {
  char tmpl[] = "/tmp/kvtier-svc-XXXXXX";
  char* p = ::mkdtemp(tmpl);
  path_ = p != nullptr ? p : "/tmp";
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

DaemonProcess::~DaemonProcess() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
}

bool DaemonProcess::Start(bool wait, std::chrono::seconds timeout) {
  ::unlink((dir_ + "/tcp.port").c_str());
  ::unlink((dir_ + "/metrics.port").c_str());
  std::vector<std::string> args = {
      binary_,
      "--service.data_dir=" + data_dir(),
      "--server.unix_socket=" + socket_path(),
      "--server.tcp_address=127.0.0.1:0",
      "--server.port_file=" + dir_ + "/tcp.port",
      "--metrics.address=127.0.0.1:0",
      "--metrics.port_file=" + dir_ + "/metrics.port",
      "--storage.host.capacity_bytes=268435456",
      "--storage.disk.write_buffer_bytes=8388608",
      "--storage.disk.block_cache_bytes=8388608",
      "--server.drain_timeout_s=10",
  };
  for (const std::string& f : flags) args.push_back(f);
  // The daemon must not outlive a test that crashes. PR_SET_PDEATHSIG fires when the forking
  // *thread* exits, so it is only used when the main thread starts the daemon.
  const bool from_main_thread = ::syscall(SYS_gettid) == ::getpid();
  // Everything the child needs is built before fork(): between fork() and exec the child of a
  // multithreaded process may only make async-signal-safe calls (no allocation, no locks).
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry(*e);
    const std::string name = entry.substr(0, entry.find('='));
    bool overridden = false;
    for (const std::string& o : env) overridden |= o.compare(0, name.size() + 1, name + "=") == 0;
    if (!overridden) env_strings.push_back(entry);
  }
  for (const std::string& o : env) env_strings.push_back(o);
  std::vector<char*> envp;
  for (std::string& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  const std::string log_path = dir_ + "/kvtierd.log";
  pid_t pid = ::fork();
  if (pid == 0) {
    if (from_main_thread) ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    ::execve(binary_.c_str(), argv.data(), envp.data());
    static const char kMsg[] = "execve kvtierd failed\n";
    (void)!::write(2, kMsg, sizeof(kMsg) - 1);
    ::_exit(127);
  }
  pid_ = pid;
  if (!wait) return true;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    int status;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return false;
    }
    auto h = Health();
    if (h.ok() && *h == grpc::health::v1::HealthCheckResponse::SERVING) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

int DaemonProcess::WaitExit(std::chrono::seconds timeout) {
  if (pid_ <= 0) return -1;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {  // checks at least once, so a zero timeout asks "has it exited yet?"
    int status;
    pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      pid_ = -1;
      if (WIFEXITED(status)) return WEXITSTATUS(status);
      if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
      return -1;
    }
    if (std::chrono::steady_clock::now() >= deadline) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

void DaemonProcess::Signal(int sig) {
  if (pid_ > 0) ::kill(pid_, sig);
}

void DaemonProcess::Kill9() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

static int ReadPortFile(const std::string& path) {
  std::ifstream in(path);
  int port = 0;
  in >> port;
  return port;
}

int DaemonProcess::tcp_port() const { return ReadPortFile(dir_ + "/tcp.port"); }
int DaemonProcess::metrics_port() const { return ReadPortFile(dir_ + "/metrics.port"); }

std::string DaemonProcess::ReadLog() const {
  std::ifstream in(log_path());
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::shared_ptr<grpc::Channel> DaemonProcess::Channel() const {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  args.SetMaxSendMessageSize(64 << 20);
  args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 16 << 20);
  args.SetInt(GRPC_ARG_HTTP2_MAX_FRAME_SIZE, 4 << 20);
  args.SetInt(GRPC_ARG_HTTP2_WRITE_BUFFER_SIZE, 8 << 20);
  args.SetInt(GRPC_ARG_TCP_READ_CHUNK_SIZE, 4 << 20);
  args.SetInt(GRPC_ARG_TCP_MAX_READ_CHUNK_SIZE, 8 << 20);
  return grpc::CreateCustomChannel("unix:" + socket_path(), grpc::InsecureChannelCredentials(),
                                   args);
}

std::unique_ptr<kvtier::v1::KvTier::Stub> DaemonProcess::Stub() const {
  return kvtier::v1::KvTier::NewStub(Channel());
}

absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus> DaemonProcess::Health()
    const {
  auto stub = grpc::health::v1::Health::NewStub(Channel());
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
  grpc::health::v1::HealthCheckRequest req;
  grpc::health::v1::HealthCheckResponse resp;
  grpc::Status s = stub->Check(&ctx, req, &resp);
  if (!s.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
  }
  return resp.status();
}

grpc::Status CreateNamespace(kvtier::v1::KvTier::Stub* stub, grpc::ClientContext* ctx,
                             const std::string& name, const std::string& codec,
                             const kvtier::v1::Layout& layout, uint32_t tokens_per_chunk) {
  kvtier::v1::CreateNamespaceRequest req;
  req.mutable_namespace_()->set_name(name);
  req.mutable_namespace_()->set_codec(codec);
  *req.mutable_namespace_()->mutable_layout() = layout;
  req.mutable_namespace_()->set_tokens_per_chunk(tokens_per_chunk);
  kvtier::v1::CreateNamespaceResponse resp;
  return stub->CreateNamespace(ctx, req, &resp);
}

absl::StatusOr<std::string> HttpGet(int port, const std::string& path) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return absl::UnavailableError("socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return absl::UnavailableError(absl::StrCat("connect 127.0.0.1:", port));
  }
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  std::string req = absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
  if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
    ::close(fd);
    return absl::UnavailableError("send");
  }
  std::string resp;
  char buf[65536];
  ssize_t n;
  while ((n = ::recv(fd, buf, sizeof(buf), 0)) > 0) resp.append(buf, static_cast<size_t>(n));
  ::close(fd);
  size_t body = resp.find("\r\n\r\n");
  if (body == std::string::npos) return absl::UnavailableError("no HTTP response");
  if (resp.compare(0, 12, "HTTP/1.0 200") != 0 && resp.compare(0, 12, "HTTP/1.1 200") != 0) {
    return absl::UnavailableError(resp.substr(0, resp.find("\r\n")));
  }
  return resp.substr(body + 4);
}

int PickFreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  int port = ntohs(addr.sin_port);
  ::close(fd);
  return port;
}

absl::StatusOr<std::map<std::string, double>> DaemonProcess::ScrapeMetrics() const {
  auto body = HttpGet(metrics_port(), "/metrics");
  if (!body.ok()) return body.status();
  std::map<std::string, double> out;
  std::istringstream in(*body);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    size_t sp = line.rfind(' ');
    if (sp == std::string::npos) continue;
    out[line.substr(0, sp)] = std::strtod(line.c_str() + sp + 1, nullptr);
  }
  return out;
}

uint64_t DaemonProcess::RssBytes() const {
  std::ifstream in(absl::StrCat("/proc/", pid_, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::strtoull(line.c_str() + 6, nullptr, 10) * 1024;
  }
  return 0;
}

double MetricValue(const std::map<std::string, double>& m, const std::string& name,
                   double fallback) {
  auto it = m.find(name);
  return it == m.end() ? fallback : it->second;
}

}  // namespace kvtier::testing
