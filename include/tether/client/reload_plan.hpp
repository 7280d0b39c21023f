#pragma once
// What a reload of a tunnels file changes (`tether up`, SIGHUP): which servers stop, which
// start, and which tunnels of the servers that stay are removed or added. Pure: the caller
// applies it.
//
// A server stays when its settings (URL, credentials, timeouts) are the same; one whose
// settings changed is stopped and started anew, since its session was made with the old
// ones. In a server that stays, a tunnel is kept when its name and mapping are the same
// (its connections go on); a changed one is removed and added again under its name.

#include <string>
#include <vector>

#include "tether/client/tunnels_file.hpp"

namespace tether::client {

struct reload_plan {
  struct kept_server {
    std::size_t running = 0;  // index in the running servers
    std::size_t next = 0;     // index in the new file's servers
    std::vector<std::size_t> remove;  // indices in its running tunnels: gone or changed
    std::vector<tunnel_spec> add;     // new or changed
  };
  std::vector<std::size_t> stop;   // indices in the running servers
  std::vector<kept_server> keep;
  std::vector<std::size_t> start;  // indices in the new file's servers

  /// Nothing to do: the file says what already runs.
  bool empty() const;
};

/// `running` holds the servers as applied: each with the tunnels that are listening.
reload_plan plan_reload(const std::vector<server_spec>& running,
                        const std::vector<server_spec>& next);

}  // namespace tether::client
