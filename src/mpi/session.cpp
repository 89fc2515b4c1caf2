// Session messages (see session.hpp).
#include "session.hpp"

#include <stdexcept>

namespace multiproc::detail::mpi {

std::string encode(const start_request& request) {
  std::string out;
  append_u64(out, request.session);
  append_string(out, request.identity);
  out.push_back(static_cast<char>(request.role));
  append_u64(out, static_cast<std::uint64_t>(request.parent));
  return out;
}

start_request decode_start(const std::string& bytes) {
  body_reader reader(bytes.data(), bytes.size());
  start_request request;
  request.session = reader.u64();
  request.identity = std::string(reader.string());
  const auto role = reader.u8();
  if (role != static_cast<std::uint8_t>(child_role::pool_worker) &&
      role != static_cast<std::uint8_t>(child_role::process)) {
    throw std::runtime_error("the start message names a role a rank cannot serve");
  }
  request.role = static_cast<child_role>(role);
  request.parent = static_cast<long>(reader.u64());
  return request;
}

std::string encode_session(std::uint64_t session, char how) {
  std::string out;
  append_u64(out, session);
  if (how != 0) out.push_back(how);
  return out;
}

std::uint64_t session_of(const std::string& bytes) noexcept {
  try {
    body_reader reader(bytes.data(), bytes.size());
    return reader.u64();
  } catch (...) {
    return 0;
  }
}

}  // namespace multiproc::detail::mpi
