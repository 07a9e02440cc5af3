// The libvirt auth file (--libvirt_auth_file): a standard libvirt auth.conf
//   [credentials-NAME]   authname=... password=...
//   [auth-libvirt-HOST]  credentials=NAME     (HOST "localhost" for a local
//                                               socket, or "default")
// that libvirt itself reads while it opens a connection. virtgated never
// parses it: it checks the file once at startup and hands its path to
// libvirt as the URI's authfile= parameter, on every connection it opens
// (libvirt strips the parameter before the URI goes to the daemon). Called
// from any thread; no state.
#pragma once

#include <string>

#include "absl/status/status.h"

namespace virtgate {

// Refuses (INVALID_ARGUMENT, naming the file and why) an auth file that
// anyone but virtgated's own user could read or replace: it must be an
// absolute path to a regular file (a symlink to one is followed), owned by
// the effective user, with no group or other permission bits (mode & 077 ==
// 0), and readable. Also refused: `uri` naming an authfile= of its own, and a
// LIBVIRT_AUTH_FILE in the environment that names another file (libvirt
// would read that one instead). Reads only metadata, never the contents.
absl::Status CheckAuthFile(const std::string& path, const std::string& uri);

// `uri` with "authfile=<path>" added to its query (percent-encoded), e.g.
// "qemu:///system?authfile=/etc/virtgate/auth.conf".
std::string UriWithAuthFile(const std::string& uri, const std::string& path);

}  // namespace virtgate
