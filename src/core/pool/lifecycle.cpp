// The pool's life: start, close, join, terminate, and what the owner's ~pool does (see
// pool_impl.hpp). The locking rules for all of them live here, with the state they guard.
#include <algorithm>
#include <stdexcept>
#include <string>

#include <multiproc/errors.hpp>
#include <multiproc/this_process.hpp>

#include "../../mpi/mpi.hpp"
#include "../../os/system.hpp"
#include "../launcher.hpp"
#include "../protocol/frame.hpp"
#include "pool_impl.hpp"

namespace multiproc::detail {

std::shared_ptr<pool_impl> pool_impl::start(const pool_options& options) {
  if (options.processes > max_pool_processes) {
    throw std::invalid_argument(
        "mp::pool: " + std::to_string(options.processes) + " processes asked for, more than " +
        std::to_string(max_pool_processes) +
        " (mp::max_pool_processes); a negative count converted to unsigned looks like this");
  }
  ensure_may_start();
  std::shared_ptr<pool_impl> impl(new pool_impl);
  impl->options_ = options;
  if (options.initializer) check_frame_size(options.initializer.encoded()->bytes.size());
  impl->method_ = checked_method(options.method.value_or(default_start_method()));
  if (impl->method_ == start_method::mpi) {
    // The job's worker ranks are the pool's processes: no more can be had.
    impl->options_.processes = mpi::pool_size(impl->options_.processes);
    impl->remote_workers_ = true;
    impl->ledger_unavailable_ = true;
    if (options.initializer && !options.initializer.encoded()->handles.empty()) {
      throw start_error(
          "mp::pool: an initializer argument that is a handle (queue, pipe, "
          "shared object) cannot reach an MPI rank",
          std::make_error_code(std::errc::invalid_argument));
    }
  }
  if (impl->options_.processes == 0) impl->options_.processes = cpu_count();
  impl->creator_ = os::current_pid();
  for (unsigned i = 0; i < impl->options_.processes; ++i) {
    impl->slots_.push_back(std::make_unique<worker_slot>());
    impl->slots_.back()->ledger_offset = i * ledger_stride;
  }
  try {
    std::lock_guard<std::mutex> lock(impl->mutex_);
    for (auto& s : impl->slots_) {
      worker_slot* slot = s.get();
      // Each supervisor owns a reference: a callback may drop the last other one while the
      // supervisor that runs it is still inside the pool.
      s->thread = std::thread([impl, slot] { impl->supervise(*slot); });
      ++impl->live_threads_;
    }
  } catch (const std::system_error& e) {
    // No thread for every slot: stop the ones that started before reporting it.
    {
      std::lock_guard<std::mutex> lock(impl->mutex_);
      impl->phase_ = phase::terminating;
      for (auto& s : impl->slots_)
        s->child.kill();
      impl->changed_.notify_all();
    }
    impl->join_threads();
    throw start_error("mp::pool: could not start a supervisor thread", e.code());
  }
  // Wait until every slot has started a worker (or the pool gave up), so a program that
  // cannot start at all is reported here rather than on the first get().
  std::unique_lock<std::mutex> lock(impl->mutex_);
  impl->changed_.wait(lock, [&] {
    return impl->broken_ || std::all_of(impl->slots_.begin(), impl->slots_.end(),
                                        [](const auto& s) { return s->child.valid(); });
  });
  if (impl->broken_) {
    std::exception_ptr failure = impl->broken_;
    lock.unlock();
    impl->join_threads();
    std::rethrow_exception(failure);
  }
  return impl;
}

pool_impl::~pool_impl() {
  // The last reference can go at the end of a supervisor's own thread: that one cannot be
  // joined from itself, and is about to end anyway.
  for (auto& s : slots_) {
    if (s->thread.joinable() && s->thread.get_id() == std::this_thread::get_id()) {
      s->thread.detach();
    }
  }
  if (rebalancer_.joinable() && rebalancer_.get_id() == std::this_thread::get_id()) {
    rebalancer_.detach();
  }
  join_threads();
}

void pool_impl::close() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (phase_ == phase::running) phase_ = phase::closed;
}

void pool_impl::join() {
  {
    std::unique_lock<std::mutex> lock(mutex_);
    if (phase_ == phase::running) {
      throw state_error("pool::join: call close() or terminate() first");
    }
    request_stop_locked();
    if (on_own_supervisor() && outstanding_ != 0) {
      // Waiting here would wait for results only this very thread reads.
      throw state_error(
          "pool::join inside one of the pool's callbacks while tasks are still running: the "
          "callback's thread is the one that reads their results (the pool still finishes "
          "them and stops)");
    }
    // Inside a callback nothing is outstanding now, and the workers have their stop frames;
    // this thread cannot join itself, so whoever owns the pool joins the threads later.
    if (on_own_supervisor()) return;
    changed_.wait(lock, [&] { return outstanding_ == 0; });
  }
  join_threads();
}

void pool_impl::terminate() {
  {
    std::unique_lock<std::mutex> lock(mutex_);
    phase_ = phase::terminating;
    fail_everything_locked(std::make_exception_ptr(
        state_error("pool: the task was cancelled because the pool was terminated")));
    for (auto& s : slots_)
      s->child.terminate();
    changed_.notify_all();
    rebalance_.notify_all();
    settle_deferred(lock);
    // Workers that ignore SIGTERM get SIGKILL after a short grace.
    if (!changed_.wait_for(lock, std::chrono::milliseconds(500),
                           [&] { return other_live_threads_locked() == 0; })) {
      for (auto& s : slots_)
        s->child.kill();
    }
    if (on_own_supervisor()) return;  // as in join(): the owner joins the threads later
  }
  join_threads();
}

void pool_impl::release_by_owner() noexcept {
  try {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (phase_ == phase::running) phase_ = phase::closed;
      if (on_own_supervisor()) {
        // Dropped inside its own callback: this thread cannot wait for results it reads
        // itself. The supervisors finish the submitted work and stop; their references keep
        // the pool alive until then.
        request_stop_locked();
        return;
      }
    }
    join();
  } catch (...) {
    try {
      terminate();
    } catch (...) {
      // Nothing left to try: the supervisors still reap every worker when they end.
    }
  }
}

bool pool_impl::owned_by_this_process() const noexcept {
  return creator_ == os::current_pid();
}

/// Joins the supervisors and the rebalancer, once, whichever threads ask, then lets go of the
/// claim ledger (no worker is left). join() and terminate() never call it on one of the
/// pool's own threads (a callback that joins or terminates its pool leaves the joining to the
/// pool's owner or to ~pool_impl, which detaches the thread it runs on first), so the lock is
/// never held by a thread another joiner waits for.
void pool_impl::join_threads() {
  std::lock_guard<std::mutex> lock(threads_mutex_);
  for (auto& s : slots_) {
    if (s->thread.joinable()) s->thread.join();
  }
  // Started under mutex_ (rebalance.cpp); once every supervisor is gone, nothing starts it.
  std::thread rebalancer;
  {
    std::lock_guard<std::mutex> state(mutex_);
    rebalancer.swap(rebalancer_);
  }
  if (rebalancer.joinable()) rebalancer.join();
  // No worker is left to claim anything: a joined pool holds no shared memory.
  std::lock_guard<std::mutex> state(mutex_);
  for (auto& s : slots_)
    s->ledger.reset();
  ledger_ = os::shared_block();
}

/// True on a supervisor of this pool, i.e. inside one of its callbacks.
bool pool_impl::on_own_supervisor() const noexcept {
  return supervised_pool() == this;
}

/// Supervisors other than the calling thread still running.
std::size_t pool_impl::other_live_threads_locked() const noexcept {
  return live_threads_ - (on_own_supervisor() ? 1 : 0);
}

}  // namespace multiproc::detail
