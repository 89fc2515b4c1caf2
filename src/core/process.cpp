// mp::process: one call in one child, on any start method (the launcher knows which).
#include <atomic>
#include <chrono>
#include <system_error>

#include <multiproc/process.hpp>

#include "../os/sync.hpp"
#include "../os/system.hpp"

#include "launcher.hpp"
#include "protocol/call.hpp"
#include "protocol/frame.hpp"

namespace multiproc {

namespace detail {

struct process_impl {
  start_method method;  ///< as asked for; after start(), as resolved (never automatic then)
  /// The encoded call, decoded in the child on every start method; given up at start (the
  /// child has its own copies of the handles it carries by then).
  std::shared_ptr<const encoded_call> call;
  std::string name;
  bool daemon = false;
  bool started = false;
  long creator = 0;
  mutable os::child child;
};

namespace {
std::atomic<unsigned long> process_counter{0};

process_impl& checked(const process_handle& impl) {
  if (!impl) throw state_error("process: this object was moved from");
  return *impl;
}
process_impl& started(const process_handle& impl, const char* operation) {
  auto& p = checked(impl);
  if (!p.started) throw state_error(std::string("process::") + operation + " before start()");
  return p;
}
}  // namespace

void process_impl_deleter::operator()(process_impl* impl) const noexcept {
  delete impl;
}

process_handle make_process(start_method method, const call_spec& call) {
  process_handle impl(new process_impl);
  impl->method = checked_method(method);
  impl->call = encode_call(call);
  check_frame_size(impl->call->bytes.size());
  impl->name = "process-" + std::to_string(++process_counter);
  impl->creator = os::current_pid();
  return impl;
}

}  // namespace detail

process::process(process&& other) noexcept = default;
process& process::operator=(process&& other) noexcept {
  if (this != &other) {
    process doomed(std::move(*this));  // joins or terminates what this held
    impl_ = std::move(other.impl_);
  }
  return *this;
}

process::~process() {
  if (!impl_ || !impl_->started) return;
  // A forked copy of this object belongs to its parent's child, not to this process.
  if (impl_->creator != detail::os::current_pid()) return;
  if (impl_->child.exit_code()) return;
  if (impl_->daemon) {
    impl_->child.terminate();
    if (impl_->child.wait(std::chrono::seconds(2))) return;
    impl_->child.kill();
  }
  impl_->child.wait(std::nullopt);
}

void process::start() {
  auto& p = detail::checked(impl_);
  if (p.started) throw state_error("process::start: this process was already started");
  detail::ensure_may_start();
  auto started = detail::launch({p.method, detail::child_role::process, p.call.get()});
  p.child = std::move(started.child);
  p.method = started.method;
  // The child counts as holding what its arguments carry from now on, before it has even
  // opened them (see travel_ticket); then the call and its copies go.
  if (!p.call->tickets.empty()) {
    const auto child = detail::os::stamp_of(p.child);
    for (const auto& ticket : p.call->tickets)
      ticket->delivered_to(child);
  }
  p.call.reset();
  // The creator is the process that starts it: an object made before mp::fork() and started
  // in the child belongs to that child.
  p.creator = detail::os::current_pid();
  p.started = true;
}

void process::join() {
  detail::started(impl_, "join").child.wait(std::nullopt);
}

bool process::join_for(std::chrono::nanoseconds timeout) {
  auto& child = detail::started(impl_, "join").child;
  if (timeout >= detail::no_deadline_beyond) return child.wait(std::nullopt);
  return child.wait(timeout);
}

bool process::is_alive() const {
  const auto& p = detail::checked(impl_);
  return p.started && !p.child.wait(std::chrono::nanoseconds(0));
}

void process::terminate() {
  detail::started(impl_, "terminate").child.terminate();
}
void process::kill() {
  detail::started(impl_, "kill").child.kill();
}

std::optional<int> process::exitcode() const {
  const auto& p = detail::checked(impl_);
  if (!p.started) return std::nullopt;
  p.child.wait(std::chrono::nanoseconds(0));  // Python's exitcode polls, too
  return p.child.exit_code();
}

std::optional<long> process::pid() const {
  const auto& p = detail::checked(impl_);
  if (!p.started) return std::nullopt;
  return p.child.pid();
}

const std::string& process::name() const {
  return detail::checked(impl_).name;
}
void process::set_name(std::string name) {
  detail::checked(impl_).name = std::move(name);
}
bool process::daemon() const {
  return detail::checked(impl_).daemon;
}
void process::set_daemon(bool daemon) {
  auto& p = detail::checked(impl_);
  if (p.started) throw state_error("process::set_daemon: the process was already started");
  p.daemon = daemon;
}
start_method process::method() const {
  return detail::checked(impl_).method;
}

}  // namespace multiproc
