#include "tether/relay/open_files.hpp"

#include <sys/resource.h>

namespace tether::relay {

open_files_limit raise_open_files_limit() noexcept {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return {};
  open_files_limit out{rl.rlim_cur, rl.rlim_cur, rl.rlim_max};
  if (rl.rlim_cur < rl.rlim_max) {
    rlimit raised = rl;
    raised.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) out.now = rl.rlim_max;
  }
  return out;
}

}  // namespace tether::relay
