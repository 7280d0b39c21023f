#pragma once
// A directory of secrets (the --dev state: CA key, server key, token) that only its owner
// may read. Nothing in it is a symlink: a link planted there could make us read another
// file as the token, or write a key where it should not go.

#include <filesystem>

namespace tether::transport {

/// Creates `dir` with mode 0700 (whatever the umask), or checks an existing one: a real
/// directory, not a symlink, without permission bits for group or others. Throws
/// std::runtime_error naming the path, what is wrong and the command that fixes it.
void ensure_private_dir(const std::filesystem::path& dir);

/// Checks a file in such a directory, if it exists: a regular file, not a symlink, and when
/// `secret`, without permission bits for group or others. Returns whether it exists.
/// Throws std::runtime_error as ensure_private_dir() does.
bool check_private_file(const std::filesystem::path& file, bool secret);

}  // namespace tether::transport
