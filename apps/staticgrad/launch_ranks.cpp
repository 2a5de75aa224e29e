// `staticgrad finetune --gpus N` (distributed_run.hpp): the parent of the N ranks.
//
//   /proc/self/cmdline minus "--gpus N" --fork + exec /proc/self/exe, N times-->
//     rank r: RANK=r WORLD_SIZE=N LOCAL_RANK=r STATICGRAD_NCCL_ID_FILE=<temp dir>/nccl_id
//   wait for all (polling); SIGINT / SIGTERM to the parent are passed on to every rank
//   (they stop after the same step; rank 0 saves a checkpoint and they exit 130 / 143);
//   a rank that exits with another non-zero status or dies by a signal: a message
//   naming it, SIGTERM to the others, SIGKILL after 5 s, exit status 1.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include "distributed_run.hpp"
#include "staticgrad/core/error.hpp"

namespace staticgrad::cli {

namespace {

std::atomic<int> forwarded_signal{0};
extern "C" void on_parent_signal(int sig) { forwarded_signal.store(sig); }

// This process's arguments without --gpus (as "--gpus N" or "--gpus=N").
std::vector<std::string> arguments_without_gpus() {
  std::ifstream f("/proc/self/cmdline", std::ios::binary);
  const std::string all((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  require(!all.empty(), "cannot read this process's arguments", {"/proc/self/cmdline", "--gpus", {}});
  std::vector<std::string> args;
  for (std::size_t at = 0; at < all.size();) {
    const std::size_t end = all.find('\0', at);
    args.push_back(all.substr(at, end - at));
    at = end == std::string::npos ? all.size() : end + 1;
  }
  std::vector<std::string> out;
  for (std::size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--gpus") {
      ++i;  // and its value
      continue;
    }
    if (args[i].rfind("--gpus=", 0) == 0) continue;
    out.push_back(args[i]);
  }
  return out;
}

std::string how_it_ended(int status) {
  if (WIFSIGNALED(status))
    return "was killed by signal " + std::to_string(WTERMSIG(status)) + " (" + ::strsignal(WTERMSIG(status)) + ")";
  return "exited with status " + std::to_string(WEXITSTATUS(status));
}

// A signal-stopped run that saved its checkpoint (loop.hpp) is not a failure.
bool stopped_cleanly(int status) {
  return WIFEXITED(status) && (WEXITSTATUS(status) == 0 || WEXITSTATUS(status) == 130 || WEXITSTATUS(status) == 143);
}

}  // namespace

int launch_ranks(int gpus) {
  namespace fs = std::filesystem;
  require(gpus >= 1, "expected at least 1", {"", "--gpus", {}});
  const auto args = arguments_without_gpus();
  std::string dir_template = (fs::temp_directory_path() / "staticgrad-ranks-XXXXXX").string();
  require(::mkdtemp(dir_template.data()) != nullptr, std::string("cannot create a temporary directory: ") + std::strerror(errno),
          {dir_template, "--gpus", {}});
  const fs::path dir = dir_template;
  const std::string id_file = (dir / "nccl_id").string();

  struct sigaction sa {}, old_int {}, old_term {};
  sa.sa_handler = on_parent_signal;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, &old_int);
  ::sigaction(SIGTERM, &sa, &old_term);

  std::vector<pid_t> pids(static_cast<std::size_t>(gpus), -1);
  std::vector<int> status(static_cast<std::size_t>(gpus), 0);
  std::vector<bool> done(static_cast<std::size_t>(gpus), false);
  std::fflush(stdout);
  std::fflush(stderr);
  for (int r = 0; r < gpus; ++r) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::sigaction(SIGINT, &old_int, nullptr);
      ::sigaction(SIGTERM, &old_term, nullptr);
      const std::string rs = std::to_string(r), ws = std::to_string(gpus);
      ::setenv("RANK", rs.c_str(), 1);
      ::setenv("LOCAL_RANK", rs.c_str(), 1);
      ::setenv("WORLD_SIZE", ws.c_str(), 1);
      ::setenv("STATICGRAD_NCCL_ID_FILE", id_file.c_str(), 1);
      ::setenv(rank_of_gpus_env, "1", 1);
      std::vector<char*> argv;
      for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      ::execv("/proc/self/exe", argv.data());
      std::fprintf(stderr, "staticgrad: error: finetune --gpus: rank %d: cannot start /proc/self/exe: %s\n", r,
                   std::strerror(errno));
      std::_Exit(127);
    }
    if (pid < 0) {
      std::fprintf(stderr, "staticgrad: error: finetune --gpus %d: fork failed for rank %d: %s\n", gpus, r,
                   std::strerror(errno));
      for (int q = 0; q < r; ++q) ::kill(pids[static_cast<std::size_t>(q)], SIGKILL);
      for (int q = 0; q < r; ++q) ::waitpid(pids[static_cast<std::size_t>(q)], nullptr, 0);
      fs::remove_all(dir);
      return 1;
    }
    pids[static_cast<std::size_t>(r)] = pid;
  }

  int failed = -1, stop_code = 0, passed_on = 0;
  std::chrono::steady_clock::time_point kill_at{};
  for (int left = gpus; left > 0;) {
    if (const int sig = forwarded_signal.load(); sig && sig != passed_on) {
      for (int r = 0; r < gpus; ++r)
        if (!done[static_cast<std::size_t>(r)]) ::kill(pids[static_cast<std::size_t>(r)], sig);
      passed_on = sig;
    }
    int st = 0;
    const pid_t pid = ::waitpid(-1, &st, WNOHANG);
    if (pid > 0) {
      for (int r = 0; r < gpus; ++r) {
        if (pids[static_cast<std::size_t>(r)] != pid) continue;
        done[static_cast<std::size_t>(r)] = true, status[static_cast<std::size_t>(r)] = st, --left;
        if (stopped_cleanly(st)) {
          if (WEXITSTATUS(st) != 0) stop_code = WEXITSTATUS(st);
        } else if (failed < 0) {
          failed = r;
          std::fprintf(stderr, "staticgrad: error: finetune --gpus %d: rank %d %s; stopping the other ranks\n", gpus, r,
                       how_it_ended(st).c_str());
          for (int q = 0; q < gpus; ++q)
            if (!done[static_cast<std::size_t>(q)]) ::kill(pids[static_cast<std::size_t>(q)], SIGTERM);
          kill_at = std::chrono::steady_clock::now() + std::chrono::seconds(5);
        }
      }
      continue;
    }
    if (failed >= 0 && std::chrono::steady_clock::now() >= kill_at)
      for (int q = 0; q < gpus; ++q)
        if (!done[static_cast<std::size_t>(q)]) ::kill(pids[static_cast<std::size_t>(q)], SIGKILL);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ::sigaction(SIGINT, &old_int, nullptr);
  ::sigaction(SIGTERM, &old_term, nullptr);
  std::error_code ec;
  fs::remove_all(dir, ec);
  return failed >= 0 ? 1 : stop_code;
}

}  // namespace staticgrad::cli
