// The claim ledger (see ledger.hpp).
#include "ledger.hpp"

#include <stdexcept>

namespace multiproc::detail {

bool claim_word::claim(std::uint64_t number) noexcept {
  std::uint64_t seen = word_->load(std::memory_order_acquire);
  for (;;) {
    if (seen & held) return false;
    if (word_->compare_exchange_weak(seen, number, std::memory_order_acq_rel,
                                     std::memory_order_acquire)) {
      return true;
    }
  }
}

std::uint64_t claim_word::hold() noexcept {
  std::uint64_t seen = word_->load(std::memory_order_acquire);
  for (;;) {
    if (seen & held) return seen & ~held;
    if (word_->compare_exchange_weak(seen, seen | held, std::memory_order_acq_rel,
                                     std::memory_order_acquire)) {
      return seen;
    }
  }
}

void claim_word::release() noexcept {
  word_->fetch_and(~held, std::memory_order_acq_rel);
}

std::uint64_t claim_word::last_claimed() const noexcept {
  return word_->load(std::memory_order_acquire) & ~held;
}

void claim_word::start_at(std::uint64_t tasks_before) noexcept {
  word_->store(tasks_before, std::memory_order_release);
}

void append_ledger(std::string& out, const ledger_location& where) {
  const std::size_t at = begin_frame(out, frame_kind::ledger, 0);
  append_u64(out, where.token);
  append_u64(out, where.size);
  append_u64(out, where.offset);
  end_frame(out, at);
}

ledger_location read_ledger(const frame_header& header, const char* body) {
  body_reader reader(body, header.body_size);
  ledger_location where;
  where.token = reader.u64();
  where.size = reader.u64();
  where.offset = reader.u64();
  // Compared without adding to the peer's offset, which could wrap around.
  if (where.size < ledger_stride || where.offset > where.size - ledger_stride ||
      where.offset % ledger_stride != 0) {
    throw std::runtime_error("multiproc: the ledger frame names a word outside its block");
  }
  return where;
}

void append_skipped(std::string& out, std::uint64_t id) {
  end_frame(out, begin_frame(out, frame_kind::skipped, id));
}

void append_ledger_refused(std::string& out) {
  end_frame(out, begin_frame(out, frame_kind::ledger_refused, 0));
}

}  // namespace multiproc::detail
