#ifndef CASEFILES_CLINUXIO_H
#define CASEFILES_CLINUXIO_H

/// Opens an existing file for writing with O_DIRECT: writes go from the caller's (aligned) buffer to the
/// device, bypassing the page cache. Returns -1 with errno set where the file system refuses it (tmpfs)
/// or elsewhere than Linux. Glibc declares O_DIRECT only under _GNU_SOURCE, which Swift's Glibc module
/// does not set.
int casefiles_open_direct(const char *path);

/// Lowers the calling thread's scheduling priority (its nice value; a thread, not the process, on Linux),
/// for threads that do bulk work so that request routing on the other threads is not kept waiting.
int casefiles_lower_thread_priority(int nice);

#endif
