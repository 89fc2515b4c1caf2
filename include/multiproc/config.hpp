// multiproc — the one configuration header: platform detection and symbol visibility.
#pragma once

#include <multiproc/version.hpp>

/// 1 where `fork()` exists (POSIX): `mp::fork()` and `mp::start_method::fork` are available.
/// 0 on Windows, where children start only by re-executing the program (spawn).
#if defined(_WIN32)
#define MULTIPROC_HAS_FORK 0
#else
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
