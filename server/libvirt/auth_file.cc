#include "server/libvirt/auth_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "server/base/quote.h"

namespace virtgate {
namespace {

absl::Status Refuse(const std::string& path, absl::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("--libvirt_auth_file ", Quote(path, 256), ": ", why));
}

// The query of a libvirt URI (between '?' and '#'), as libvirt splits it.
bool NamesAuthFile(absl::string_view uri) {
  const size_t q = uri.find('?');
  if (q == absl::string_view::npos) return false;
  absl::string_view query = uri.substr(q + 1);
  query = query.substr(0, query.find('#'));
  for (absl::string_view param : absl::StrSplit(query, absl::ByAnyChar("&;"))) {
    // The remote driver matches parameter names without regard to case.
    if (absl::EqualsIgnoreCase(param.substr(0, param.find('=')), "authfile")) return true;
  }
  return false;
}

}  // namespace

absl::Status CheckAuthFile(const std::string& path, const std::string& uri) {
  if (path.empty() || path[0] != '/') return Refuse(path, "must be an absolute path");
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) {
    return Refuse(path, errno == ENOENT ? "no such file" : std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) return Refuse(path, "not a regular file");
  if (st.st_uid != geteuid()) {
    return Refuse(path, absl::StrCat("owned by uid ", st.st_uid,
                                     ", not by the user virtgated runs as (uid ", geteuid(),
                                     "); it holds passwords, so only that user may own it"));
  }
  if ((st.st_mode & 077) != 0) {
    return Refuse(path, absl::StrFormat("mode %04o lets group or others at it; it holds "
                                        "passwords: chmod 600 it",
                                        st.st_mode & 07777));
  }
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Refuse(path, absl::StrCat("cannot be read: ", std::strerror(errno)));
  close(fd);
  if (NamesAuthFile(uri)) {
    return Refuse(path, absl::StrCat("--libvirt_uri ", Quote(uri, 256),
                                     " names an authfile= of its own; give one of the two"));
  }
  // libvirt prefers the environment's file to the URI's.
  const char* env = std::getenv("LIBVIRT_AUTH_FILE");
  if (env != nullptr && path != env) {
    return Refuse(path, absl::StrCat("LIBVIRT_AUTH_FILE=", Quote(env, 256),
                                     " in virtgated's environment would win over it; unset it"));
  }
  return absl::OkStatus();
}

std::string UriWithAuthFile(const std::string& uri, const std::string& path) {
  std::string encoded;
  for (const char c : path) {
    if (absl::ascii_isalnum(c) || c == '/' || c == '-' || c == '.' || c == '_' || c == '~') {
      encoded.push_back(c);
    } else {
      absl::StrAppendFormat(&encoded, "%%%02X", static_cast<unsigned char>(c));
    }
  }
  const size_t hash = uri.find('#');
  const absl::string_view base = absl::string_view(uri).substr(0, hash);
  const absl::string_view fragment =
      hash == std::string::npos ? absl::string_view() : absl::string_view(uri).substr(hash);
  const char* separator = base.find('?') == absl::string_view::npos ? "?"
                          : absl::EndsWith(base, "?") || absl::EndsWith(base, "&") ? ""
                                                                                    : "&";
  return absl::StrCat(base, separator, "authfile=", encoded, fragment);
}

}  // namespace virtgate
