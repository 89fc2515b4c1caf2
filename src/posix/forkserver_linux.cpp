// The fork server on Linux (see src/os/forkserver.hpp): the request, the server's loop, and
// what a child of the server does before it runs its role.
//
// Waiting for a child that is not ours: the server forks it, so only the server can reap it.
// The requester makes a report socket pair per child and sends one end with the request; the
// child and the server both hold it. The child writes the status it is about to exit with as
// its role returns; the server reaps the child when SIGCHLD says so (a signalfd) and writes
// the status it reaped (posix::end_report), then closes it. The reply to the request carries a
// pidfd the server opened while the child was its unreaped child: the requester waits on it
// and then reads the report (src/posix/child.cpp), and signals the child through it without
// any risk of reaching a process that reused the pid (the server may reap first).
//
// The spare: the server keeps one child forked ahead of the next request, blocked on a socket
// of its own (named "mp-spare" meanwhile, so `ps` says what it is). A request hands the
// spare its descriptors and role, and the reply names the spare; once the spare has taken
// them (its end of the socket closes), the server forks the next one. A start then waits for
// neither the fork nor the first page faults of a fresh copy (Android's zygote keeps such
// children for the same reason). The spare is a fork of the same server as a child forked at
// request time would be: the server runs nothing between its preload and its first spare,
// and nothing between requests.
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <multiproc/errors.hpp>

#include "../os/fork.hpp"
#include "../os/forkserver.hpp"
#include "../os/spawn.hpp"
#include "descriptors.hpp"
#include "internal.hpp"
#include "platform.hpp"
#include "records_linux.hpp"

namespace multiproc::detail::os {

namespace {

constexpr char request_magic[8] = {'M', 'P', 'F', 'O', 'R', 'K', '0', '1'};
constexpr char reply_magic[8] = {'M', 'P', 'F', 'O', 'R', 'K', 'O', 'K'};
constexpr std::size_t max_secret = 64;

/// One request: one record on the link. Its descriptors, in this order: the child's channel,
/// the far end of the report pair, the working directory (if has_directory), then stdin,
/// stdout and stderr for each bit set in `stdio` (a descriptor the requester has closed is
/// closed in the child too, as after a fork).
struct request_record {
  char magic[8];
  std::uint32_t secret_size;
  char secret[max_secret];
  std::uint8_t role;
  std::uint8_t kind;
  std::uint8_t stdio;
  std::uint8_t has_directory;
};
static_assert(2 + 1 + 3 <= posix::max_attached_descriptors,
              "a request's descriptors fit in one record");
using posix::receive_record;
using posix::received;
using posix::send_record;
using posix::seqpacket_pair;

/// The answer: the child's pid with its pidfd attached, or -errno and nothing attached.
struct reply_record {
  char magic[8];
  std::int64_t pid;
};

/// What the server hands its spare for one request. Its descriptors are the request's, in the
/// same order: the child's channel, the report socket's far end (the server keeps its own copy
/// to report the reaped status), the working directory (if has_directory), then the standard
/// streams for each bit set in `stdio`.
struct assignment_record {
  char magic[8];
  std::uint8_t role;
  std::uint8_t kind;
  std::uint8_t stdio;
  std::uint8_t has_directory;
};
constexpr char assignment_magic[8] = {'M', 'P', 'S', 'P', 'A', 'R', 'E', '1'};

start_error server_gone() {
  return start_error("multiproc: the fork server is gone",
                     std::make_error_code(std::errc::broken_pipe));
}

bool means_gone(int error) {
  return error == EPIPE || error == ECONNRESET || error == ENOTCONN;
}

/// This process's working directory, as a descriptor a child can fchdir() to (empty if it
/// cannot be opened: the child then stays in the server's).
owned_handle working_directory() {
  const posix::creating_descriptors guard;
  const int fd = ::open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return {};
  posix::register_descriptor(fd);
  return owned_handle(fd);
}

// ---- the server's side ----------------------------------------------------------------------

/// What a child of the server needs between the fork and its role.
struct forked_context {
  forked_entry entry;
  std::uint8_t role;
  int channel;
  int report;     ///< the requester's report socket, for the child's own word on its end
  int directory;  ///< -1: none
  int stdio[3];   ///< -1: closed in the requester
  long requester;
  long server;
};

/// The descriptor `fd`, kept through the fork's clean-up, is not needed any more.
void drop_kept(int fd) noexcept {
  posix::close_registered(fd, posix::stamp_of(handle_kind::internal));
}

/// Set in the server when it made itself SCHED_BATCH (from SCHED_OTHER); its children go back.
bool server_is_batch = false;

int run_forked(void* context) {
  const auto& forked = *static_cast<const forked_context*>(context);
  // The server's own arrangements are not the child's: its scheduling policy back to the
  // requester's, SIGCHLD unblocked, SIGINT to its default (the disposition a spawned child
  // starts with).
  if (server_is_batch) {
    const sched_param normal{};
    ::sched_setscheduler(0, SCHED_OTHER, &normal);
  }
  sigset_t none;
  sigemptyset(&none);
  pthread_sigmask(SIG_SETMASK, &none, nullptr);
  ::signal(SIGINT, SIG_DFL);
  for (int i = 0; i < 3; ++i) {
    if (forked.stdio[i] >= 0) {
      ::dup2(forked.stdio[i], i);
      drop_kept(forked.stdio[i]);
    } else {
      ::close(i);
    }
  }
  if (forked.directory >= 0) {
    if (::fchdir(forked.directory) != 0) {
      std::fprintf(stderr,
                   "multiproc: a fork server's child could not enter the directory of "
                   "its parent: %s\n",
                   std::strerror(errno));
    }
    drop_kept(forked.directory);
  }
  posix::set_logical_parent(forked.requester, forked.server);
  channel own(forked.channel, forked.channel);
  const int code = forked.entry(forked.role, own);
  // Its output out first (as fork_child would after this returns), so that whoever joins it
  // finds all of it written; then the status it is about to exit with, so the requester
  // learns its end from the pidfd rather than from the server after a reap.
  posix::flush_own_output();
  const posix::end_report announcement{posix::end_report::exiting, code & 0xff};
  ::send(forked.report, &announcement, sizeof announcement, MSG_NOSIGNAL | MSG_DONTWAIT);
  drop_kept(forked.report);
  return code;
}

/// The context for a child from a request's (or an assignment's) fields and descriptors, which
/// come in the same order: the channel, the report socket, then the directory and the standard
/// streams as the fields say. The caller has checked that the count matches.
forked_context context_from(forked_entry entry, std::uint8_t role, std::uint8_t stdio,
                            bool has_directory, const std::vector<owned_handle>& fds,
                            long requester, long server) {
  forked_context context{entry,
                         role,
                         static_cast<int>(fds[0].get()),
                         static_cast<int>(fds[1].get()),
                         has_directory ? static_cast<int>(fds[2].get()) : -1,
                         {-1, -1, -1},
                         requester,
                         server};
  std::size_t next = has_directory ? 3 : 2;
  for (int i = 0; i < 3; ++i) {
    if ((stdio & (1u << i)) != 0) context.stdio[i] = static_cast<int>(fds[next++].get());
  }
  return context;
}

std::size_t stream_count(std::uint8_t stdio) {
  return static_cast<std::size_t>(__builtin_popcount(stdio & 7u));
}

constexpr char spare_name[] = "mp-spare";

/// What a spare needs before it is given a role.
struct spare_context {
  forked_entry entry;
  int socket;
  long requester;
  long server;
  char name[17];  ///< the server's command name, the child's once it has its role
};

/// A spare's life: the server's assignment, then the role as any child of the server. While
/// it waits it ends with the server through its socket (the server's end closes when the
/// server ends, and a record sent before comes first); it is tied to the server by signal
/// (PR_SET_PDEATHSIG) only once it is a pool worker, so a child of mp::process outlives the
/// server, as a forked child outlives its parent.
int run_spare(void* context) {
  const auto& spare = *static_cast<const spare_context*>(context);
  assignment_record assignment{};
  received got = receive_record(spare.socket, &assignment, sizeof assignment);
  drop_kept(spare.socket);
  if (got.size <= 0) return 0;  // the server let this spare go (or is gone)
  const bool has_directory = assignment.has_directory != 0;
  if (!got.whole || got.size != static_cast<ssize_t>(sizeof assignment) ||
      std::memcmp(assignment.magic, assignment_magic, sizeof assignment_magic) != 0 ||
      assignment.stdio > 7 ||
      got.fds.size() != 2 + (has_directory ? 1 : 0) + stream_count(assignment.stdio)) {
    std::fprintf(stderr, "multiproc: a fork server's spare got a malformed assignment\n");
    return 1;
  }
  if (assignment.kind == static_cast<std::uint8_t>(child_kind::pool_worker) &&
      !die_with_parent(spare.server)) {
    return 0;  // the server is gone: so are the pool's workers
  }
  ::prctl(PR_SET_NAME, spare.name);
  const forked_context forked = context_from(spare.entry, assignment.role, assignment.stdio,
                                             has_directory, got.fds, spare.requester, spare.server);
  for (auto& fd : got.fds)
    (void)fd.release();  // the child's own from here (run_forked)
  return run_forked(const_cast<forked_context*>(&forked));
}

[[noreturn]] void leave() {
  // The children it forked for pools are tied to it (PR_SET_PDEATHSIG) and go with it; those
  // of mp::process live on, as a forked child outlives its parent.
  std::fflush(stderr);
  ::_exit(0);
}

class server {
 public:
  server(int link, std::string_view secret, long requester, forked_entry entry)
      : link_(link), secret_(secret), requester_(requester), entry_(entry) {}

  [[noreturn]] void run() {
    prepare();
    fork_spare();
    for (;;) {
      // A negative descriptor is skipped: no spare has just been handed out.
      const int handed = handed_ ? static_cast<int>(handed_.get()) : -1;
      pollfd watch[4] = {{link_, POLLIN, 0},
                         {static_cast<int>(children_.get()), POLLIN, 0},
                         {static_cast<int>(requester_alive_.get()), POLLIN, 0},
                         {handed, POLLIN, 0}};
      if (::poll(watch, 4, -1) < 0) {
        if (errno == EINTR) continue;
        leave();
      }
      if (watch[1].revents != 0) reap_and_report();
      if (watch[2].revents != 0) leave();  // the requester ended (even if a copy holds the link)
      if (watch[0].revents != 0 && !serve_one()) leave();
      if (watch[3].revents != 0 && handed_) {
        handed_.reset();
        if (!spare_) fork_spare();
      }
    }
  }

 private:
  void prepare() {
    int on = 1;
    ::setsockopt(link_, SOL_SOCKET, SO_PASSCRED, &on, sizeof on);
    // SCHED_BATCH: the server's wake-ups (a spare taking its request, a child's end) never
    // preempt the child just started, which the scheduler tends to place on the server's CPU;
    // the server waits for a free CPU instead. A policy the requester chose is left alone.
    if (::sched_getscheduler(0) == SCHED_OTHER) {
      const sched_param normal{};
      server_is_batch = ::sched_setscheduler(0, SCHED_BATCH, &normal) == 0;
    }
    // Standard descriptors exist, so that received ones never land on 0-2 (which a child
    // overwrites with its requester's).
    for (int fd = 0; fd < 3; ++fd) {
      if (::fcntl(fd, F_GETFD) < 0) ::open("/dev/null", O_RDWR);
    }
    // Ctrl-C reaches the whole process group: what it means is the requester's to decide; its
    // pool workers (tied to this server) must not go because this server did.
    ::signal(SIGINT, SIG_IGN);
    sigset_t child_signal;
    sigemptyset(&child_signal);
    sigaddset(&child_signal, SIGCHLD);
    pthread_sigmask(SIG_BLOCK, &child_signal, nullptr);
    const posix::creating_descriptors guard;
    const int children = ::signalfd(-1, &child_signal, SFD_CLOEXEC | SFD_NONBLOCK);
    const long alive = ::syscall(SYS_pidfd_open, static_cast<pid_t>(requester_), 0);
    if (children < 0 || alive < 0) {
      std::fprintf(stderr,
                   "multiproc: the fork server cannot watch its children or its "
                   "parent: %s\n",
                   std::strerror(errno));
      leave();
    }
    posix::register_descriptor(children);
    children_ = owned_handle(children);
    posix::register_descriptor(static_cast<int>(alive));
    requester_alive_ = owned_handle(alive);
    ::fcntl(static_cast<int>(alive), F_SETFD, FD_CLOEXEC);
    // Opened after the requester may already have gone: then the pidfd names someone else.
    if (static_cast<long>(::getppid()) != requester_) leave();
  }

  void reap_and_report() {
    signalfd_siginfo info;
    while (::read(static_cast<int>(children_.get()), &info, sizeof info) > 0) {
    }
    for (;;) {
      int status = 0;
      const pid_t pid = ::waitpid(-1, &status, WNOHANG);
      if (pid < 0 && errno == EINTR) continue;
      if (pid <= 0) return;
      if (spare_ && spare_->process.pid() == pid) spare_.reset();  // ended before its use
      const auto it = reports_.find(pid);
      if (it == reports_.end()) continue;
      posix::end_report report{0, 255};
      if (WIFSIGNALED(status)) {
        report = {1, WTERMSIG(status)};
      } else if (WIFEXITED(status)) {
        report = {0, WEXITSTATUS(status)};
      }
      // A requester that let go of the child without waiting reads nothing: nothing lost.
      ::send(static_cast<int>(it->second.get()), &report, sizeof report,
             MSG_NOSIGNAL | MSG_DONTWAIT);
      reports_.erase(it);
    }
  }

  void reply(std::int64_t pid_or_error, int pidfd = -1) {
    reply_record answer{};
    std::memcpy(answer.magic, reply_magic, sizeof answer.magic);
    answer.pid = pid_or_error;
    send_record(link_, &answer, sizeof answer, &pidfd, pidfd >= 0 ? 1 : 0);
  }

  void refuse(const char* why, bool answer) {
    std::fprintf(stderr, "multiproc: fork server %ld refused a fork request: %s\n",
                 static_cast<long>(::getpid()), why);
    std::fflush(stderr);
    if (answer) reply(-EACCES);
  }

  /// Takes one request and answers it; false once the requester has closed the link.
  bool serve_one() {
    request_record request{};
    received got = receive_record(link_, &request, sizeof request);
    if (got.size == 0 || (got.size < 0 && means_gone(got.error))) return false;
    if (got.size < 0) return true;
    if (got.sender != requester_) {
      // Not answered: on a link a copy of the requester shares, an answer could reach the
      // requester in place of its own.
      const std::string why = "it came from process " + std::to_string(got.sender) +
                              ", and only process " + std::to_string(requester_) +
                              ", which started this server, may ask";
      refuse(why.c_str(), false);
      return true;
    }
    const bool has_directory = request.has_directory != 0;
    const std::size_t directories = has_directory ? 1 : 0;
    if (!got.whole || got.size != static_cast<ssize_t>(sizeof request) ||
        std::memcmp(request.magic, request_magic, sizeof request_magic) != 0 || request.stdio > 7 ||
        got.fds.size() != 2 + directories + stream_count(request.stdio)) {
      refuse("it is malformed", true);
      return true;
    }
    if (!same_secret(request)) {
      refuse("it does not carry this server's secret", true);
      return true;
    }
    if (spare_ && hand_to_spare(request, got)) {
      reports_.emplace(spare_->process.pid(), std::move(got.fds[1]));
      reply(spare_->process.pid(), static_cast<int>(spare_->process.handle()));
      // The next spare is forked once this one has taken its assignment (it closes its end
      // of the socket then): forked now, it took the CPU the woken spare was placed on, and
      // the start waited for the fork after all.
      handed_ = std::move(spare_->socket);
      spare_.reset();
      return true;
    }
    // No spare (it could not be forked, or it has ended): this request's child is forked now.
    forked_context context = context_from(entry_, request.role, request.stdio, has_directory,
                                          got.fds, requester_, static_cast<long>(::getpid()));
    std::vector<native_handle> keep;
    for (const auto& fd : got.fds)
      keep.push_back(fd.get());
    try {
      child forked = fork_child(&run_forked, &context, keep, kind_of(request.kind));
      if (forked.handle() == invalid_handle) {
        // No pidfd (descriptors exhausted): the requester could not signal it safely.
        forked.kill();
        forked.wait(std::nullopt);
        reply(-EMFILE);
        return true;
      }
      reports_.emplace(forked.pid(), std::move(got.fds[1]));
      reply(forked.pid(), static_cast<int>(forked.handle()));
    } catch (const start_error& e) {
      reply(-(e.code().value() != 0 ? e.code().value() : EAGAIN));
    }
    if (!spare_ && !handed_) fork_spare();
    return true;
  }

  static child_kind kind_of(std::uint8_t kind) {
    return kind == static_cast<std::uint8_t>(child_kind::pool_worker) ? child_kind::pool_worker
                                                                      : child_kind::process;
  }

  /// Gives the request and its descriptors to the spare. False if the spare cannot take it (it
  /// has ended): the spare is then let go.
  bool hand_to_spare(const request_record& request, const received& got) {
    assignment_record assignment{};
    std::memcpy(assignment.magic, assignment_magic, sizeof assignment.magic);
    assignment.role = request.role;
    assignment.kind = request.kind;
    assignment.stdio = request.stdio;
    assignment.has_directory = request.has_directory;
    int attached[posix::max_attached_descriptors];
    std::size_t count = 0;
    for (const auto& fd : got.fds)
      attached[count++] = static_cast<int>(fd.get());
    if (send_record(static_cast<int>(spare_->socket.get()), &assignment, sizeof assignment,
                    attached, count)) {
      return true;
    }
    spare_.reset();  // ended or ending: SIGCHLD reaps it
    return false;
  }

  /// Forks the next spare. Without one (fork failed, descriptors exhausted), requests are
  /// served by forking at request time.
  void fork_spare() noexcept {
    try {
      auto [mine, theirs] = seqpacket_pair();
      spare_context context{
          entry_, static_cast<int>(theirs.get()), requester_, static_cast<long>(::getpid()), {}};
      ::prctl(PR_GET_NAME, context.name);
      const native_handle keep[] = {theirs.get()};
      // Named before the fork, so the spare never shows under the server's name, not even in
      // its first instant (a count of the server's children would take it for a child).
      struct renamed_while_forking {
        const char* own;
        explicit renamed_while_forking(const char* name) : own(name) {
          ::prctl(PR_SET_NAME, spare_name);
        }
        ~renamed_while_forking() { ::prctl(PR_SET_NAME, own); }
      };
      child forked = [&] {
        const renamed_while_forking renamed(context.name);
        return fork_child(&run_spare, &context, keep, child_kind::process);
      }();
      if (forked.handle() == invalid_handle) {
        forked.kill();
        forked.wait(std::nullopt);
        return;
      }
      spare_.emplace(spare_child{std::move(forked), std::move(mine)});
    } catch (const std::exception&) {
      // Served without a spare until the next attempt.
    }
  }

  /// Compared without an early exit, so the time taken says nothing about the secret.
  bool same_secret(const request_record& request) const {
    if (request.secret_size != secret_.size() || secret_.size() > max_secret) return false;
    unsigned char difference = 0;
    for (std::size_t i = 0; i < secret_.size(); ++i)
      difference |= static_cast<unsigned char>(request.secret[i] ^ secret_[i]);
    return difference == 0;
  }

  int link_;
  std::string secret_;
  long requester_;
  forked_entry entry_;
  owned_handle children_;         ///< signalfd of SIGCHLD
  owned_handle requester_alive_;  ///< pidfd of the requester: readable once it has ended
  /// Per child still running: where to report its end.
  std::unordered_map<long, owned_handle> reports_;
  struct spare_child {
    child process;
    owned_handle socket;  ///< where its assignment goes; closing it lets the spare go
  };
  std::optional<spare_child> spare_;
  owned_handle handed_;  ///< the socket of the spare handed out last, until it takes the request
};

}  // namespace

bool forkserver_supported() noexcept {
  static const bool supported = [] {
    const long fd = ::syscall(SYS_pidfd_open, ::getpid(), 0);
    if (fd < 0) return false;
    ::close(static_cast<int>(fd));
    return true;
  }();
  return supported;
}

std::pair<channel, channel> make_forkserver_link() {
  auto [requester, server] = seqpacket_pair();
  // Set before any record is sent: the kernel then stamps every record with its sender.
  int on = 1;
  if (::setsockopt(static_cast<int>(server.get()), SOL_SOCKET, SO_PASSCRED, &on, sizeof on) != 0) {
    throw start_error("multiproc: could not prepare the fork server's link",
                      {errno, std::generic_category()});
  }
  const native_handle mine = requester.release();
  const native_handle theirs = server.release();
  return {channel(mine, mine), channel(theirs, theirs)};
}

owned_handle send_fork_request(channel& link, std::string_view secret, std::uint8_t role,
                               child_kind kind, channel& child_end) {
  struct closes_end {
    channel& end;
    ~closes_end() { end.close(); }
  } closer{child_end};
  if (secret.size() > max_secret) {
    throw start_error("multiproc: fork server secret too long",
                      std::make_error_code(std::errc::invalid_argument));
  }
  auto [report, far_report] = seqpacket_pair();
  const owned_handle directory = working_directory();

  request_record request{};
  std::memcpy(request.magic, request_magic, sizeof request.magic);
  request.secret_size = static_cast<std::uint32_t>(secret.size());
  std::memcpy(request.secret, secret.data(), secret.size());
  request.role = role;
  request.kind = static_cast<std::uint8_t>(kind);
  request.has_directory = directory ? 1 : 0;
  int attached[posix::max_attached_descriptors];
  std::size_t count = 0;
  attached[count++] = static_cast<int>(child_end.read_handle());
  attached[count++] = static_cast<int>(far_report.get());
  if (directory) attached[count++] = static_cast<int>(directory.get());
  for (int fd = 0; fd < 3; ++fd) {
    if (::fcntl(fd, F_GETFD) < 0) continue;
    request.stdio = static_cast<std::uint8_t>(request.stdio | (1u << fd));
    attached[count++] = fd;
  }
  if (!send_record(static_cast<int>(link.read_handle()), &request, sizeof request, attached,
                   count)) {
    if (means_gone(errno)) throw server_gone();
    throw start_error("multiproc: could not send a request to the fork server",
                      {errno, std::generic_category()});
  }
  // The server holds its own copies of what was attached now.
  return std::move(report);
}

child receive_fork_answer(channel& link, owned_handle report, std::chrono::milliseconds limit) {
  reply_record answer{};
  received got =
      receive_record(static_cast<int>(link.read_handle()), &answer, sizeof answer, limit);
  if (got.size == 0 || (got.size < 0 && means_gone(got.error))) throw server_gone();
  if (got.size < 0 && got.error == ETIMEDOUT) {
    throw start_error("multiproc: the fork server did not answer within " +
                          std::to_string(limit.count()) + " ms (stopped or starved?)",
                      std::make_error_code(std::errc::timed_out));
  }
  if (got.size < 0) {
    throw start_error("multiproc: could not read the fork server's answer",
                      {got.error, std::generic_category()});
  }
  if (!got.whole || got.size != static_cast<ssize_t>(sizeof answer) ||
      std::memcmp(answer.magic, reply_magic, sizeof reply_magic) != 0) {
    throw start_error("multiproc: the fork server sent a malformed answer",
                      std::make_error_code(std::errc::protocol_error));
  }
  if (answer.pid < 0) {
    const int error = static_cast<int>(-answer.pid);
    if (error == EACCES) {
      throw start_error("multiproc: the fork server refused the request",
                        std::make_error_code(std::errc::permission_denied));
    }
    throw start_error("multiproc: the fork server could not fork",
                      {error, std::generic_category()});
  }
  if (got.fds.size() != 1 || answer.pid == 0) {
    throw start_error("multiproc: the fork server's answer lacks the child's pidfd",
                      std::make_error_code(std::errc::protocol_error));
  }
  return child(static_cast<long>(answer.pid), got.fds[0].release(), report.release());
}

[[noreturn]] void serve_forks(channel& link, std::string_view secret, long requester,
                              forked_entry entry) {
  server(static_cast<int>(link.read_handle()), secret, requester, entry).run();
}

}  // namespace multiproc::detail::os
