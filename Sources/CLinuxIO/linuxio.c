#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>
#include "CLinuxIO.h"

#ifdef __linux__

int casefiles_open_direct(const char *path) {
    return open(path, O_WRONLY | O_DIRECT | O_CLOEXEC);
}

int casefiles_lower_thread_priority(int nice) {
    return setpriority(PRIO_PROCESS, (id_t)gettid(), nice);
}

#else  // Elsewhere: buffered writes (fdatasync is the durability step either way), one priority for all.

int casefiles_open_direct(const char *path) { (void)path; errno = EINVAL; return -1; }
int casefiles_lower_thread_priority(int nice) { (void)nice; return 0; }

#endif
