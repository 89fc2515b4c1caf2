// multiproc — serialisation glue. Arguments and results travel as cereal binary archives.
// Every standard type cereal supports works without further includes; a user type works
// through a `template <class Archive> void serialize(Archive&)` member (or cereal's
// save/load pair), exactly as cereal documents.
#pragma once

#include <cereal/archives/binary.hpp>
#include <cereal/cereal.hpp>
#include <cereal/types/array.hpp>
#include <cereal/types/atomic.hpp>
#include <cereal/types/base_class.hpp>
#include <cereal/types/bitset.hpp>
#include <cereal/types/chrono.hpp>
#include <cereal/types/common.hpp>
#include <cereal/types/complex.hpp>
#include <cereal/types/deque.hpp>
#include <cereal/types/forward_list.hpp>
#include <cereal/types/functional.hpp>
#include <cereal/types/list.hpp>
#include <cereal/types/map.hpp>
#include <cereal/types/memory.hpp>
#include <cereal/types/optional.hpp>
#include <cereal/types/queue.hpp>
#include <cereal/types/set.hpp>
#include <cereal/types/stack.hpp>
#include <cereal/types/string.hpp>
#include <cereal/types/tuple.hpp>
#include <cereal/types/unordered_map.hpp>
#include <cereal/types/unordered_set.hpp>
#include <cereal/types/utility.hpp>
#include <cereal/types/valarray.hpp>
#include <cereal/types/variant.hpp>
#include <cereal/types/vector.hpp>

#include <type_traits>

#include <multiproc/detail/archive.hpp>

namespace multiproc {

/// True if T can travel between processes: cereal can save it with its binary archive and load
/// it with the library's (cereal's binary format, every claimed length checked before it is
/// allocated). A user type needs a generic `template <class Archive>` serialize (or load)
/// function: one written for cereal::BinaryInputArchive alone is not used. void counts as
/// transferable (a task without a result).
template <class T>
inline constexpr bool is_transferable_v =
    std::is_void_v<T> ||
    // cereal "supports" raw pointers with a static_assert of its own; they cannot travel.
    (!std::is_pointer_v<T> && !std::is_member_pointer_v<T> &&
     cereal::traits::is_output_serializable<T, cereal::BinaryOutputArchive>::value &&
     cereal::traits::is_input_serializable<T, detail::input_archive>::value);

}  // namespace multiproc
