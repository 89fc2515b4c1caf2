// The mpi start method where it is not built (MULTIPROC_MPI=OFF, or Windows): never available.
#include <system_error>

#include <multiproc/errors.hpp>

#include "mpi.hpp"

namespace multiproc::detail::mpi {

bool available() noexcept {
  return false;
}

std::string why_unavailable() {
  return MULTIPROC_HAS_FORK ? " (build multiproc with -DMULTIPROC_MPI=ON and run the program "
                              "under mpirun)"
                            : " (POSIX only)";
}

void init_rank(int, char**) {}

unsigned pool_size(unsigned) {
  throw start_error("the mpi start method is not available" + why_unavailable(),
                    std::make_error_code(std::errc::function_not_supported));
}

launched launch(const launch_plan&) {
  throw start_error("the mpi start method is not available" + why_unavailable(),
                    std::make_error_code(std::errc::function_not_supported));
}

}  // namespace multiproc::detail::mpi
