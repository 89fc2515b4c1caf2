// fork() for the library: the guarded fork every forked child goes through, the child's
// clean-up, and mp::fork()'s raw fork.
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <mutex>
#include <new>
#include <shared_mutex>

#include <multiproc/errors.hpp>

#include "../os/fork.hpp"
#include "../os/spawn.hpp"
#include "../os/system.hpp"
#include "descriptors.hpp"
#include "internal.hpp"
#include "platform.hpp"

#if defined(__SANITIZE_THREAD__)
#define MULTIPROC_DETAIL_THREAD_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define MULTIPROC_DETAIL_THREAD_SANITIZER 1
#endif
#endif
#if defined(MULTIPROC_DETAIL_THREAD_SANITIZER)
#include <sanitizer/tsan_interface.h>
#endif
#if __has_include(<stdio_ext.h>)
#include <stdio_ext.h>  // __fpending, __fpurge (glibc, musl); the BSDs and macOS: fpurge
#define MULTIPROC_DETAIL_STDIO_EXT 1
#endif

namespace multiproc::detail::os {

namespace {

/// A standard C++ stream with a buffer of its own: after std::ios::sync_with_stdio(false)
/// (libstdc++ then gives it a std::filebuf). Synced with stdio, it writes through to its FILE.
template <class Char>
bool buffers_itself(const std::basic_ios<Char>& stream) noexcept {
  return dynamic_cast<std::basic_filebuf<Char>*>(stream.rdbuf()) != nullptr;
}

/// Forgets what a stream's buffer holds without writing it.
template <class Char>
struct unwritten_output : std::basic_streambuf<Char> {
  /// Only file buffers: their pending bytes are the parent's output. (An in-memory buffer's
  /// put area is its contents, not pending output: left alone.)
  static void drop(std::basic_ios<Char>& stream) noexcept {
    if (!buffers_itself(stream)) return;
    auto* buffer = stream.rdbuf();
    // Through member pointers named via this derived class: the one legal way to reach the
    // protected put-area members of a buffer that is not of this class.
    using base = std::basic_streambuf<Char>;
    Char* (base::*begin)() const = &unwritten_output::pbase;
    Char* (base::*next)() const = &unwritten_output::pptr;
    Char* (base::*end)() const = &unwritten_output::epptr;
    void (base::*set)(Char*, Char*) = &unwritten_output::setp;
    // Written only when something is pending: a write to the buffer object would cost this
    // fresh child a copy-on-write page fault for nothing.
    if ((buffer->*next)() != (buffer->*begin)())
      (buffer->*set)((buffer->*begin)(), (buffer->*end)());
  }
};

void drop_pending(FILE* stream) noexcept {
#if defined(MULTIPROC_DETAIL_STDIO_EXT)
  // As for the C++ buffers: a FILE is written (a page copied) only if it holds something.
  if (__fpending(stream) != 0) __fpurge(stream);
#else
  fpurge(stream);
#endif
}

/// In a forked child, before it runs anything: the bytes the parent's threads had buffered in
/// stdout, stderr and the standard C++ streams at the moment of the fork are the parent's to
/// write, and it will. A flush before fork() cannot prevent them (another thread may print
/// between the flush and the fork), so the child drops its copies; its own output, written
/// from now on, is flushed when its call ends.
void drop_inherited_output() noexcept {
  drop_pending(stdout);
  drop_pending(stderr);
  unwritten_output<char>::drop(std::cout);
  unwritten_output<char>::drop(std::cerr);
  unwritten_output<char>::drop(std::clog);
  unwritten_output<wchar_t>::drop(std::wcout);
  unwritten_output<wchar_t>::drop(std::wcerr);
  unwritten_output<wchar_t>::drop(std::wclog);
}

/// ThreadSanitizer does not see a lock re-created in place (a placement new, no call):
/// without this it would take the fork child's fresh locks for the ones its parent held.
void forget_locks_held_at_fork(void* descriptors, void* code_cache) noexcept {
#if defined(MULTIPROC_DETAIL_THREAD_SANITIZER)
  for (void* lock : {descriptors, code_cache}) {
    __tsan_mutex_pre_unlock(lock, 0);
    __tsan_mutex_post_unlock(lock, 0);
  }
#else
  (void)descriptors;
  (void)code_cache;
#endif
}

/// Forks with every signal blocked (no handler of the program runs in the child before it has
/// cleaned up) and with the library's fork-sensitive locks held exclusively: no other thread
/// can be half-way through creating a descriptor (which the child could then not close) or
/// through the module cache. Returns fork's result; the caller restores `previous`.
pid_t guarded_fork(sigset_t& previous) {
  // What the parent printed goes out first (os::flush_parent_output); what a stream that
  // buffers itself holds stays the parent's, and the child drops its copy.
  flush_parent_output();
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &previous);
  std::unique_lock<std::shared_mutex> descriptors(posix::descriptor_creation_mutex());
  std::unique_lock<std::mutex> code_cache(posix::code_cache_mutex());
  const pid_t pid = ::fork();
  if (pid == 0) {
    // The child's copies are held by a thread that does not exist there (an rwlock remembers
    // its writer's tid): make them fresh instead of unlocking them.
    descriptors.release();
    code_cache.release();
    forget_locks_held_at_fork(&posix::descriptor_creation_mutex(), &posix::code_cache_mutex());
    new (&posix::descriptor_creation_mutex()) std::shared_mutex;
    new (&posix::code_cache_mutex()) std::mutex;
  }
  return pid;
}

}  // namespace

// In the child, when its call is done: its own output goes out before _exit -- the standard
// streams only, as Python's forked children do. Another FILE may still hold bytes one of the
// parent's threads wrote between the parent's flush and the fork: they are the parent's to
// write (and _exit() drops them), so that a program's own log never gets its lines twice.
void posix::flush_own_output() {
  std::cout.flush();
  std::cerr.flush();
  std::fflush(stdout);
  std::fflush(stderr);
}

// The child side runs in a copy of a possibly multi-threaded process in which only this
// thread exists: it touches only what the library owns (its descriptor table, which needs no
// lock) before it runs the entry, and it leaves with _exit, never exit (the parent's atexit
// handlers and static destructors are not the child's to run).
child fork_child(int (*entry)(void* context), void* context, std::span<const native_handle> keep,
                 child_kind kind) {
  const long parent = static_cast<long>(::getpid());
  sigset_t previous;
  const pid_t pid = guarded_fork(previous);
  if (pid == 0) {
    posix::close_registered_descriptors(keep, true);
    drop_inherited_output();
    // No blocked signal, as a spawned child starts: a SIGTERM the forking thread had blocked
    // would otherwise make terminate() a no-op on this child. Handlers stay (it is a copy).
    sigset_t none;
    sigemptyset(&none);
    pthread_sigmask(SIG_SETMASK, &none, nullptr);
    if (kind == child_kind::pool_worker && !die_with_parent(parent)) ::_exit(0);
    const int code = entry(context);
    posix::flush_own_output();
    ::_exit(code);
  }
  const int saved = errno;
  pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  if (pid < 0) throw start_error("multiproc: fork failed", {saved, std::generic_category()});
  // Opened after the fork, so the child never holds its own pidfd (or a sibling's).
  const posix::creating_descriptors guard;
  return child(pid, posix::platform::open_process_descriptor_locked(pid));
}

long fork_plain() {
  sigset_t previous;
  const pid_t pid = guarded_fork(previous);
  const int saved = errno;
  if (pid == 0) posix::close_registered_descriptors({}, false);
  pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  if (pid < 0) throw start_error("multiproc: fork failed", {saved, std::generic_category()});
  return pid;
}

owned_handle adopt_inherited(std::uint64_t token) noexcept {
  return owned_handle(static_cast<native_handle>(token), handle_kind::travelling);
}

std::uint64_t inherit_token(native_handle handle) noexcept {
  return static_cast<std::uint64_t>(handle);
}

}  // namespace multiproc::detail::os
