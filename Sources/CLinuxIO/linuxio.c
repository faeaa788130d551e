#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <sys/resource.h>
#include <unistd.h>
#include "CLinuxIO.h"

#ifdef __linux__

int casefiles_open_direct(const char *path) {
    return open(path, O_WRONLY | O_DIRECT | O_CLOEXEC);
}

int casefiles_set_thread_nice(int nice) {
    return setpriority(PRIO_PROCESS, (id_t)gettid(), nice) == 0 ? 0 : errno;
}

int casefiles_thread_nice(void) {
    return getpriority(PRIO_PROCESS, (id_t)gettid());
}

int casefiles_keep_freed_memory(unsigned long mmap_threshold, unsigned long trim_threshold, int arena_max) {
#ifdef __GLIBC__
    return mallopt(M_MMAP_THRESHOLD, (int)mmap_threshold) && mallopt(M_TRIM_THRESHOLD, (int)trim_threshold)
        && mallopt(M_ARENA_MAX, arena_max);
#else
    (void)mmap_threshold; (void)trim_threshold; (void)arena_max; return 0;
#endif
}

long casefiles_minor_faults(void) {
    struct rusage usage;
    return getrusage(RUSAGE_SELF, &usage) == 0 ? usage.ru_minflt : -1;
}

#else  // Elsewhere: buffered writes (fdatasync is the durability step either way), one priority for all.

int casefiles_open_direct(const char *path) { (void)path; errno = EINVAL; return -1; }
int casefiles_set_thread_nice(int nice) { (void)nice; return ENOSYS; }
int casefiles_thread_nice(void) { return 0; }
int casefiles_keep_freed_memory(unsigned long mmap_threshold, unsigned long trim_threshold, int arena_max) {
    (void)mmap_threshold; (void)trim_threshold; (void)arena_max; return 0;
}
long casefiles_minor_faults(void) { return -1; }

#endif
