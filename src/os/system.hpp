// The backend seam, part 7: facts about this process and small services of the system.
// Twins: src/posix/system.cpp, src/win32/system.cpp.
#pragma once

#include <cstddef>

namespace multiproc::detail::os {

long current_pid() noexcept;
/// POSIX: getppid() now -- in a fork server's child, the process that asked for it while the
/// server lives; Windows: the creator's id as recorded at creation.
long parent_pid() noexcept;
/// The threads this process runs now (Linux: /proc/self/stat); 0 where that cannot be told
/// (Windows, where nothing asks: its only start method is spawn).
unsigned thread_count() noexcept;
/// The CPUs this process may run on (its affinity mask where there is one); 0 if unknown.
unsigned hardware_cpu_count() noexcept;
/// Removes a variable from this process's environment.
void unset_environment(const char* name) noexcept;
/// Fills `buffer` with cryptographically random bytes. Throws start_error on failure.
void random_bytes(void* buffer, std::size_t size);
/// Makes this process ignore the terminal's interrupt (Ctrl-C), as a pool worker does: the
/// pool's owner decides what an interrupt means, and the worker follows when it ends.
/// POSIX: SIGINT ignored. Windows: Ctrl+C ignored (SetConsoleCtrlHandler).
void ignore_interrupts() noexcept;
/// Before a child starts, on every start method (as Python does): what this process has
/// printed goes out now, so the child's output comes after it, also when stdout is a file or a
/// pipe. Only what is thread-safe to flush from the starting thread (a pool's supervisor, or
/// whichever thread starts a process): every FILE (fflush(NULL) takes each one's lock) and the
/// standard C++ streams while they are synced with stdio. A stream that buffers itself (after
/// std::ios::sync_with_stdio(false)) is not thread-safe: flushing it here could race with the
/// thread that prints; its bytes stay buffered. Portable (src/os/output.cpp).
void flush_parent_output() noexcept;
/// Asks for [data, data + bytes), memory about to be written whole for the first time, to be
/// backed by huge pages and faulted in at once. Linux: madvise MADV_HUGEPAGE, then
/// MADV_POPULATE_WRITE (5.14+). Portable POSIX (macOS) and Windows: nothing (Windows' large
/// pages need a privilege programs seldom hold). Never fails.
void prepare_fresh_memory(void* data, std::size_t bytes) noexcept;
/// True if this process's standard error is a terminal (a console on Windows).
bool stderr_is_terminal() noexcept;
/// The width of the terminal standard error is, in columns; 0 if unknown.
int stderr_terminal_columns() noexcept;

}  // namespace multiproc::detail::os
