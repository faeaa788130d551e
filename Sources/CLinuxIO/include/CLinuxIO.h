#ifndef CASEFILES_CLINUXIO_H
#define CASEFILES_CLINUXIO_H
#include <sys/types.h>

/// Starts write-back of a file range without waiting for it (sync_file_range with
/// SYNC_FILE_RANGE_WRITE), so the fdatasync before an acknowledgement finds little left to write.
/// Glibc declares sync_file_range only under _GNU_SOURCE, which Swift's Glibc module does not set.
int casefiles_start_writeback(int fd, off_t offset, off_t count);

#endif
