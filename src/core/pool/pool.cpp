// The public mp::pool: argument checks, then straight to pool_impl (pool_impl.hpp).
#include <multiproc/pool.hpp>

#include <stdexcept>

#include "pool_impl.hpp"

namespace multiproc {

namespace detail {

std::shared_ptr<result_state> pool_submit_parts(pool_impl& pool, const call_spec* calls,
                                                std::size_t count) {
  return pool.submit(calls, count, false);
}
std::shared_ptr<result_state> pool_submit_parts_paced(pool_impl& pool, const call_spec* calls,
                                                      std::size_t count) {
  return pool.submit(calls, count, true);
}
std::shared_ptr<result_state> pool_submit_chunks(pool_impl& pool, const call_spec* calls,
                                                 std::size_t count, bool paced, std::size_t items,
                                                 std::size_t chunksize) {
  return pool.submit(calls, count, paced, items, chunksize);
}
std::size_t pool_workers(const pool_impl& pool) noexcept {
  return pool.size();
}

}  // namespace detail

namespace {
unsigned at_least_one(unsigned processes) {
  if (processes == 0) {
    throw std::invalid_argument("mp::pool: the number of processes must be at least 1");
  }
  return processes;
}
}  // namespace

pool::pool(unsigned processes) : pool(pool_options{at_least_one(processes), {}, 0, std::nullopt}) {}

pool::pool(const pool_options& options) : impl_(detail::pool_impl::start(options)) {}

pool::pool(pool&&) noexcept = default;
pool& pool::operator=(pool&& other) noexcept {
  if (this != &other) {
    pool doomed(std::move(*this));
    impl_ = std::move(other.impl_);
  }
  return *this;
}

pool::~pool() {
  if (!impl_) return;
  if (!impl_->owned_by_this_process()) {
    // A forked copy of a pool belongs to the parent: its threads and workers are not ours,
    // so no destructor of its may run here.
    new std::shared_ptr<detail::pool_impl>(std::move(impl_));
    return;
  }
  impl_->release_by_owner();
}

const std::shared_ptr<detail::pool_impl>& pool::impl() const {
  if (!impl_) throw state_error("pool: this object was moved from");
  return impl_;
}

void pool::close() {
  impl()->close();
}
std::size_t pool::close(cancel_pending_t) {
  return impl()->close_cancelling_pending();
}
void pool::join() {
  impl()->join();
}
void pool::terminate() {
  impl()->terminate();
}
std::size_t pool::size() const {
  return impl()->size();
}

}  // namespace multiproc
