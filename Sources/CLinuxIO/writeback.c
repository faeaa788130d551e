#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>
#include "CLinuxIO.h"

int casefiles_start_writeback(int fd, off_t offset, off_t count) {
#ifdef __linux__
    return sync_file_range(fd, offset, count, SYNC_FILE_RANGE_WRITE);
#else
    (void)fd; (void)offset; (void)count;
    return 0;
#endif
}

int casefiles_drop_behind(int fd, off_t offset, off_t count) {
#ifdef __linux__
    int waited = sync_file_range(fd, offset, count,
                                 SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER);
    if (waited != 0) return waited;
    return posix_fadvise(fd, offset, count, POSIX_FADV_DONTNEED);
#else
    (void)fd; (void)offset; (void)count;
    return 0;
#endif
}

int casefiles_drop_cached(int fd, off_t offset, off_t count) {
#ifdef __linux__
    return posix_fadvise(fd, offset, count, POSIX_FADV_DONTNEED);
#else
    (void)fd; (void)offset; (void)count;
    return 0;
#endif
}

int casefiles_lower_thread_priority(int nice) {
#ifdef __linux__
    return setpriority(PRIO_PROCESS, (id_t)gettid(), nice);
#else
    (void)nice;
    return 0;
#endif
}
