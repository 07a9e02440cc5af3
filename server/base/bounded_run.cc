#include "server/base/bounded_run.h"

#include <atomic>
#include <memory>
#include <thread>

#include "absl/synchronization/notification.h"

namespace virtgate {
namespace {
std::atomic<bool> abandoned{false};
}  // namespace

void NoteAbandonedThread() { abandoned.store(true); }

bool AnyThreadAbandoned() { return abandoned.load(); }

bool RunOrAbandon(std::function<void()> work, absl::Time deadline) {
  auto done = std::make_shared<absl::Notification>();
  std::thread thread([work = std::move(work), done] {
    work();
    done->Notify();
  });
  if (done->WaitForNotificationWithDeadline(deadline)) {
    thread.join();
    return true;
  }
  thread.detach();
  NoteAbandonedThread();
  return false;
}

}  // namespace virtgate
