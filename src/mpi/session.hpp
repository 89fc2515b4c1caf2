// The messages that open and steer one session (a worker rank serving one pool worker or one
// mp::process), shared by rank 0 (parent.cpp) and the worker ranks (rank.cpp).
#pragma once

#include <cstdint>
#include <string>

#include "../core/protocol/frame.hpp"
#include "../core/protocol/hello.hpp"

namespace multiproc::detail::mpi {

/// Bytes of the channel per data message: large enough that a 256 MiB argument is 64
/// messages, small enough that a chunk is never a noticeable pause for the other direction.
inline constexpr std::size_t chunk_size = std::size_t{4} << 20;

/// What a start message carries: rank 0's image identity is checked as a spawned child's
/// hello is (the same binary on every rank, or no call ever runs); `session` tags the
/// terminate and close messages of this session, so a late one never reaches the next.
struct start_request {
  std::uint64_t session = 0;
  std::string identity;
  child_role role = child_role::pool_worker;
  long parent = 0;
};

std::string encode(const start_request& request);
/// Throws std::runtime_error if `bytes` are malformed.
start_request decode_start(const std::string& bytes);

/// A session number, alone (close) or with one byte (terminate: 't' or 'k').
std::string encode_session(std::uint64_t session, char how = 0);
/// The session number a close or terminate message names (0 if malformed).
std::uint64_t session_of(const std::string& bytes) noexcept;

}  // namespace multiproc::detail::mpi
