// multiproc — the one configuration header: platform detection and symbol visibility.
#pragma once

#if defined(_WIN32)
/// Defined to 1 on Windows, where children start only by re-executing the program (spawn).
#define MULTIPROC_WINDOWS 1
#define MULTIPROC_HAS_FORK 0
#else
/// Defined to 1 on POSIX systems (Linux, macOS, the BSDs).
#define MULTIPROC_POSIX 1
/// 1 where `fork()` exists: `mp::fork()` and `mp::start_method::fork` are available.
#define MULTIPROC_HAS_FORK 1
#endif

// mingw-w64 frees a thread_local's storage before running its destructor when a thread exits
// (GCC PR 80816): there the library keeps per-thread objects without destructors.
#if defined(__MINGW32__)
#define MULTIPROC_DETAIL_THREAD_LOCAL_DESTRUCTORS_BROKEN 1
#endif

// Symbols of the shared library are hidden unless marked; a static build needs no marks.
#if defined(MULTIPROC_SHARED)
#if defined(_WIN32)
#if defined(MULTIPROC_BUILDING)
#define MULTIPROC_API __declspec(dllexport)
#else
#define MULTIPROC_API __declspec(dllimport)
#endif
#else
#define MULTIPROC_API __attribute__((visibility("default")))
#endif
#else
#define MULTIPROC_API
#endif

/// The library's version as one number: major * 10000 + minor * 100 + patch.
#define MULTIPROC_VERSION 100
