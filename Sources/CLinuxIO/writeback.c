#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>
#include "CLinuxIO.h"

#ifdef __linux__

int casefiles_start_writeback(int fd, off_t offset, off_t count) {
    return sync_file_range(fd, offset, count, SYNC_FILE_RANGE_WRITE);
}

int casefiles_drop_behind(int fd, off_t offset, off_t count) {
    int waited = sync_file_range(fd, offset, count,
                                 SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER);
    if (waited != 0) return waited;
    return posix_fadvise(fd, offset, count, POSIX_FADV_DONTNEED);
}

int casefiles_drop_cached(int fd, off_t offset, off_t count) {
    return posix_fadvise(fd, offset, count, POSIX_FADV_DONTNEED);
}

int casefiles_lower_thread_priority(int nice) {
    return setpriority(PRIO_PROCESS, (id_t)gettid(), nice);
}

#else  // Elsewhere these are hints the data path can do without: fdatasync is still the durability step.

int casefiles_start_writeback(int fd, off_t offset, off_t count) { (void)fd; (void)offset; (void)count; return 0; }
int casefiles_drop_behind(int fd, off_t offset, off_t count) { (void)fd; (void)offset; (void)count; return 0; }
int casefiles_drop_cached(int fd, off_t offset, off_t count) { (void)fd; (void)offset; (void)count; return 0; }
int casefiles_lower_thread_priority(int nice) { (void)nice; return 0; }

#endif
