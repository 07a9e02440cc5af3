#include "server/base/bounded_run.h"

#include <memory>
#include <thread>

#include "absl/synchronization/notification.h"

namespace virtgate {

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
  return false;
}

}  // namespace virtgate
