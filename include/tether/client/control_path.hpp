#pragma once
// Where control sockets live, and the checks that keep them the caller's own. Every client
// (`tether connect`, `tether up`) listens on one; `tether map` finds it.
//
// The default folder is $XDG_RUNTIME_DIR/tether when that variable is set, else
// $XDG_STATE_HOME/tether/run, else ~/.local/state/tether/run; a client's socket there is
// "<pid>.sock". The folder is made with mode 0700 and must belong to the caller; a socket is
// mode 0600 and must belong to the caller. The server side checks the peer's uid as well
// (control_server.hpp), so these checks are about not being fooled by someone else's file.

#include <filesystem>
#include <stdexcept>
#include <vector>

namespace tether::client {

/// A control folder or socket that is not safe to use (another user's, a symlink, writable
/// by others, not a socket), or a socket path that a running client holds. The message says
/// which path, what is wrong and how to fix it. Commands exit 2 on it.
class control_path_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// The folder for control sockets (see above). Throws control_path_error when neither
/// XDG_RUNTIME_DIR nor a home folder can be found.
std::filesystem::path default_control_folder();

/// default_control_folder() / "<pid>.sock"
std::filesystem::path default_control_socket(long pid);

/// For the default folder: creates it with mode 0700 when missing (and its parents), and
/// checks that it is a real folder (not a symlink) of the caller's that others cannot write
/// to. Throws control_path_error.
void prepare_control_folder(const std::filesystem::path& folder);

/// For the folder of a socket given with --control: it must exist and belong to the caller,
/// or to root and not be writable by others unless sticky (like /tmp). Throws
/// control_path_error (or std::runtime_error when it does not exist).
void check_control_folder(const std::filesystem::path& folder);

/// Before a client binds `socket`: a stale socket there (nobody listening, its process
/// gone) is removed; a live one, something that is not a socket, or a socket of another
/// user throws control_path_error.
void clear_stale_socket(const std::filesystem::path& socket);

/// Before `tether map` talks to `socket`: its folder passes check_control_folder() and it is
/// a socket of the caller's. Throws control_path_error, or std::runtime_error when there is
/// no such file.
void check_control_socket(const std::filesystem::path& socket);

struct running_client {
  long pid = 0;
  std::filesystem::path socket;
};

/// The clients with a "<pid>.sock" of the caller's in `folder`, by pid. Stale sockets (the
/// pid is gone, or nothing listens) are removed on the way. A missing folder has none.
/// Throws control_path_error when the folder itself fails the checks.
std::vector<running_client> find_running_clients(const std::filesystem::path& folder);

}  // namespace tether::client
