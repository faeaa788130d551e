#ifndef CASEFILES_CLINUXIO_H
#define CASEFILES_CLINUXIO_H

/// Opens an existing file for writing with O_DIRECT: writes go from the caller's (aligned) buffer to the
/// device, bypassing the page cache. Returns -1 with errno set where the file system refuses it (tmpfs)
/// or elsewhere than Linux. Glibc declares O_DIRECT only under _GNU_SOURCE, which Swift's Glibc module
/// does not set.
int casefiles_open_direct(const char *path);

/// Sets the calling thread's nice value (on Linux a thread's, not the process's). Returns 0, or the errno:
/// EACCES for a value below the thread's current one without CAP_SYS_NICE or room under RLIMIT_NICE; ENOSYS
/// elsewhere than Linux. The rules for which thread gets which value: `ThreadPriority` in CaseFilesStorage.
int casefiles_set_thread_nice(int nice);

/// The calling thread's nice value (0 elsewhere than Linux).
int casefiles_thread_nice(void);

/// Makes glibc's malloc keep memory the process frees for reuse rather than handing it back to the kernel:
/// allocations up to `mmap_threshold` bytes come from the heap (not a fresh mmap each), and free memory at the
/// top of a heap is returned only past `trim_threshold` bytes, over at most `arena_max` heaps. Returns 1 on success, 0 where refused or not
/// glibc. Why: every fresh page is a page fault, and on a virtual machine whose free memory goes back to the
/// host, a costly one; see `ProcessMemory` in CaseFilesStorage.
int casefiles_keep_freed_memory(unsigned long mmap_threshold, unsigned long trim_threshold, int arena_max);

/// Minor page faults of the whole process so far (getrusage RUSAGE_SELF ru_minflt), for `--trace-uploads`.
long casefiles_minor_faults(void);

#endif
