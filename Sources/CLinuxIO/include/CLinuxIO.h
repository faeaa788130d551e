#ifndef CASEFILES_CLINUXIO_H
#define CASEFILES_CLINUXIO_H
#include <sys/types.h>

/// Starts write-back of a file range without waiting for it (sync_file_range with
/// SYNC_FILE_RANGE_WRITE), so the fdatasync before an acknowledgement finds little left to write.
/// Glibc declares sync_file_range only under _GNU_SOURCE, which Swift's Glibc module does not set.
int casefiles_start_writeback(int fd, off_t offset, off_t count);

/// Waits until a range whose write-back was started earlier is on the device, then drops its pages from
/// the page cache (POSIX_FADV_DONTNEED). An upload then cycles through a few warm pages instead of
/// claiming fresh ones for every byte, which on a VM whose free memory goes back to the host costs
/// several times the copy itself. Not a durability step: fdatasync still is.
int casefiles_drop_behind(int fd, off_t offset, off_t count);

/// Drops a range that is already on the device (after fdatasync) from the page cache: no waiting.
int casefiles_drop_cached(int fd, off_t offset, off_t count);

/// Lowers the calling thread's scheduling priority (its nice value; a thread, not the process, on Linux),
/// for threads that do bulk work so that request routing on the other threads is not kept waiting.
int casefiles_lower_thread_priority(int nice);

#endif
