// multiproc_limits: what this machine allows at best, measured by the same harness (Google
// Benchmark, same build flags, same run) as multiproc_bench, so that run.py can print
// "multiproc / limit" ratios that mean something. Nothing here uses multiproc.
//
//   BM_fork_exit_wait        fork(); child _exit(0); parent waitpid()
//   BM_posix_spawn_self      posix_spawn of this very binary, which writes one ready byte to an
//                            inherited pipe and exits at once; parent reads the byte and waits
//   BM_pipe_pingpong/<pin>   1 byte there and back between two processes over two pipes;
//                            pin 0 = let the scheduler place them (the limit run.py uses),
//                            1 = both on CPU 0, 2 = on different CPUs (to show the wake-up cost)
//   BM_memcpy/<bytes>        memcpy bandwidth on pre-faulted buffers (64 MiB and 256 MiB)
//   BM_memcpy_fresh_x4/<bytes>  four copies, each into fresh pages (mapped for it and unmapped
//                            after): what a by-value round trip must do at least (encode,
//                            decode, encode, decode), page faults included
#include <benchmark/benchmark.h>

#include <fcntl.h>
#include <sched.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>

extern char** environ;

namespace {

// The flag that turns this binary into the trivial child of BM_posix_spawn_self. It is checked
// before anything else in main so the child costs exactly "exec + dynamic loading + static
// initialisers", which is the floor for any re-executing (spawn) backend.
constexpr std::string_view kReadyFlag = "--limits-ready-fd=";

// The child's end of the ready pipe is moved to this fixed descriptor: a number far above what
// the parent has open, so the dup2 in the child never degenerates into dup2(fd, fd), which
// would leave O_CLOEXEC set and the child unable to write.
constexpr int kChildReadyFd = 63;

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "multiproc_limits: %s: %s\n", what, std::strerror(errno));
  std::_Exit(2);
}

void wait_child(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) die("waitpid");
  }
}

bool read_byte(int fd) {
  char c = 0;
  for (;;) {
    const ssize_t n = ::read(fd, &c, 1);
    if (n == 1) return true;
    if (n == 0) return false;
    if (errno != EINTR) die("read");
  }
}

void write_byte(int fd) {
  const char c = 'x';
  while (::write(fd, &c, 1) != 1) {
    if (errno != EINTR) die("write");
  }
}

void BM_fork_exit_wait(benchmark::State& state) {
  for (auto _ : state) {
    const pid_t pid = ::fork();
    if (pid < 0) die("fork");
    if (pid == 0) ::_exit(0);
    wait_child(pid);
  }
}
BENCHMARK(BM_fork_exit_wait)->UseRealTime()->Unit(benchmark::kMicrosecond);

void BM_posix_spawn_self(benchmark::State& state) {
  // /proc/self/exe rather than argv[0]: works whatever the current directory and PATH are, and
  // is what a spawn backend on Linux re-executes too.
  const std::string flag = std::string(kReadyFlag) + std::to_string(kChildReadyFd);
  std::string arg0 = "multiproc_limits";
  char* child_argv[] = {arg0.data(), const_cast<char*>(flag.c_str()), nullptr};

  for (auto _ : state) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) die("pipe2");
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[1], kChildReadyFd);
    pid_t pid = 0;
    const int rc = ::posix_spawn(&pid, "/proc/self/exe", &actions, nullptr, child_argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) {
      errno = rc;
      die("posix_spawn");
    }
    ::close(fds[1]);
    if (!read_byte(fds[0])) {
      state.SkipWithError("spawned child exited without its ready byte");
      ::close(fds[0]);
      wait_child(pid);
      break;
    }
    ::close(fds[0]);
    wait_child(pid);
  }
}
BENCHMARK(BM_posix_spawn_self)->UseRealTime()->Unit(benchmark::kMicrosecond);

// Pins the calling thread to one CPU; returns false where that CPU does not exist.
bool pin_to(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return ::sched_setaffinity(0, sizeof set, &set) == 0;
}

void BM_pipe_pingpong(benchmark::State& state) {
  const int pin = static_cast<int>(state.range(0));
  cpu_set_t saved;
  ::sched_getaffinity(0, sizeof saved, &saved);
  if (pin == 2 && CPU_COUNT(&saved) < 2) {
    state.SkipWithError("needs two CPUs");
    for (auto _ : state) {
    }
    return;
  }

  int to_child[2];
  int to_parent[2];
  if (::pipe2(to_child, O_CLOEXEC) != 0 || ::pipe2(to_parent, O_CLOEXEC) != 0) die("pipe2");
  const pid_t pid = ::fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    if (pin != 0) pin_to(pin == 1 ? 0 : 1);
    ::close(to_child[1]);
    ::close(to_parent[0]);
    // Echo until the parent closes its end.
    while (read_byte(to_child[0]))
      write_byte(to_parent[1]);
    ::_exit(0);
  }
  ::close(to_child[0]);
  ::close(to_parent[1]);
  if (pin != 0) pin_to(0);

  for (auto _ : state) {
    write_byte(to_child[1]);
    if (!read_byte(to_parent[0])) die("ping-pong child vanished");
  }

  ::close(to_child[1]);
  ::close(to_parent[0]);
  wait_child(pid);
  ::sched_setaffinity(0, sizeof saved, &saved);
  state.SetLabel(pin == 0 ? "scheduler placed" : pin == 1 ? "same CPU" : "different CPUs");
}
BENCHMARK(BM_pipe_pingpong)->Arg(0)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMicrosecond);

void BM_memcpy(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  // Buffers are written once before timing so page faults are not counted: the limit is the
  // copy itself, the best any payload path (serialise, shared memory, deserialise) can reach.
  auto src = std::make_unique_for_overwrite<char[]>(size);
  auto dst = std::make_unique_for_overwrite<char[]>(size);
  std::memset(src.get(), 'a', size);
  std::memset(dst.get(), 'b', size);
  for (auto _ : state) {
    std::memcpy(dst.get(), src.get(), size);
    benchmark::DoNotOptimize(dst.get());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(size));
}
BENCHMARK(BM_memcpy)
    ->Arg(int64_t{64} << 20)
    ->Arg(int64_t{256} << 20)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

void BM_memcpy_fresh_x4(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  // The source is warm, as the caller's vector is; every destination is new memory, as each
  // copy of a by-value round trip is (a block, then a vector, in each direction).
  auto src = std::make_unique_for_overwrite<char[]>(size);
  std::memset(src.get(), 'a', size);
  for (auto _ : state) {
    for (int copy = 0; copy < 4; ++copy) {
      void* fresh =
          ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (fresh == MAP_FAILED) {
        state.SkipWithError("mmap failed");
        return;
      }
      std::memcpy(fresh, src.get(), size);
      benchmark::DoNotOptimize(fresh);
      benchmark::ClobberMemory();
      ::munmap(fresh, size);
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * 4 *
                          static_cast<int64_t>(size));
}
BENCHMARK(BM_memcpy_fresh_x4)
    ->Arg(int64_t{256} << 20)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::string_view(argv[1]).starts_with(kReadyFlag)) {
    const int fd = std::atoi(argv[1] + kReadyFlag.size());
    write_byte(fd);
    ::_exit(0);
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
