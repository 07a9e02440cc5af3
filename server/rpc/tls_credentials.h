// TLS server credentials that follow their files, without a restart and
// without ever serving a broken file.
//
// gRPC's FileWatcherCertificateProvider re-reads its files every refresh
// interval, but gRPC 1.51 takes whatever it reads: a truncated or mismatched
// certificate makes every new handshake fail until the file is fixed. So
// gRPC watches a checked copy instead: StagedTlsFiles looks at the
// operator's files every refresh interval, and when they changed and the
// new ones are good (PEM, key matching certificate, CA parses) it swaps them
// into a private directory (mode 0700, under $TMPDIR) with one symlink
// rename, so gRPC reads all old or all new files. A bad new file is logged
// once and the last good one stays in use.
#pragma once

#include <grpcpp/security/server_credentials.h>

#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace virtgate {

struct TlsFiles {
  std::string cert;       // PEM certificate chain, leaf first
  std::string key;        // PEM private key of the leaf
  std::string client_ca;  // PEM CA bundle; set: clients must present a certificate it signed
  absl::Duration refresh_interval = absl::Seconds(60);
};

// The three files' contents, checked: INVALID_ARGUMENT naming the flag and
// file that is wrong.
struct TlsPem {
  std::string cert, key, client_ca;
};
absl::StatusOr<TlsPem> ReadCheckedTlsFiles(const TlsFiles& files);

class StagedTlsFiles {
 public:
  // Checks the files (the server must not start on bad ones), copies them
  // and starts watching.
  static absl::StatusOr<std::unique_ptr<StagedTlsFiles>> Start(TlsFiles files);
  ~StagedTlsFiles();  // stops watching, removes the copy

  // Credentials reading the copy (through gRPC's file watcher).
  std::shared_ptr<grpc::ServerCredentials> Credentials() const;

 private:
  StagedTlsFiles(TlsFiles files, std::string dir) : files_(std::move(files)), dir_(std::move(dir)) {}
  absl::Status Stage(const TlsPem& pem);  // a new generation, then the swap
  void Watch();

  const TlsFiles files_;
  const std::string dir_;  // dir_/current -> dir_/gen-N/{cert,key,ca}.pem
  int generation_ = 0;     // the watcher's (and Start's, before it runs)
  TlsPem staged_;          // what gen-N holds
  std::string last_bad_;   // the bad content last reported, to report once
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread watcher_;
};

}  // namespace virtgate
