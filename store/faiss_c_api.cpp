// The subset of FAISS's C API that cmrsearch calls, over the C++ libfaiss.
//
// Debian's libfaiss-dev 1.7.3 ships the C API headers but not libfaiss_c, so
// this file stands in for it (store/CMakeLists.txt uses it only when no system
// libfaiss_c is found). Every definition below sits in an extern "C" block
// after the headers that declare it: a signature that drifts from upstream's
// then fails to compile instead of quietly becoming a C++ overload.
//
// Behaviour matches upstream's C API: handles are the C++ objects themselves,
// functions returning int give 0 or a FaissErrorCode, and
// faiss_get_last_error() returns the message of the last failure on the
// calling thread (NULL before any). Two deliberate differences, both bringing
// 1.7.3 up to what later FAISS releases do, are marked where they happen.

#include <faiss/c_api/AutoTune_c.h>
#include <faiss/c_api/IndexIVF_c.h>
#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/error_c.h>
#include <faiss/c_api/impl/AuxIndexStructures_c.h>
#include <faiss/c_api/index_factory_c.h>
#include <faiss/c_api/index_io_c.h>

#include "cmr_faiss_ext.h"

#include <faiss/AutoTune.h>
#include <faiss/Index.h>
#include <faiss/IndexIDMap.h>
#include <faiss/IndexIVF.h>
#include <faiss/impl/FaissAssert.h>
#include <faiss/impl/FaissException.h>
#include <faiss/impl/IDSelector.h>
#include <faiss/index_factory.h>
#include <faiss/index_io.h>

#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <typeinfo>
#include <vector>

namespace {

// C handles are opaque aliases of the C++ objects, as upstream has them.
template <typename Cpp, typename Handle>
auto cpp(Handle* handle) {
    using Target = std::conditional_t<std::is_const_v<Handle>, const Cpp, Cpp>;
    return reinterpret_cast<Target*>(handle);
}

template <typename Handle, typename Cpp>
Handle* handle_of(Cpp* object) {
    return reinterpret_cast<Handle*>(object);
}

thread_local std::string last_error_text;
thread_local const char* last_error = nullptr;

int record_failure(FaissErrorCode code, const char* what) noexcept {
    try {
        last_error_text = what;
        last_error = last_error_text.c_str();
    } catch (...) {
        // Losing the detail must not lose the fact that the call failed.
        last_error = "FAISS call failed; out of memory storing its message";
    }
    return code;
}

// No exception may cross into C: each entry point runs its body through here.
template <typename Body>
int guarded(Body&& body) noexcept {
    try {
        body();
        return OK;
    } catch (const faiss::FaissException& e) {
        return record_failure(FAISS_EXCEPT, e.what());
    } catch (const std::exception& e) {
        return record_failure(STD_EXCEPT, e.what());
    } catch (...) {
        return record_failure(UNKNOWN_EXCEPT, "Unknown error");
    }
}

// Accepts a position in an IndexIDMap's sub-index when the caller's selector
// accepts the external id stored for that position.
class SelectorThroughIdMap final : public faiss::IDSelector {
   public:
    SelectorThroughIdMap(const std::vector<int64_t>& id_map, const faiss::IDSelector& selects_ids)
            : id_map_(id_map), selects_ids_(selects_ids) {}

    bool is_member(int64_t position) const override {
        return position >= 0 && static_cast<size_t>(position) < id_map_.size() &&
                selects_ids_.is_member(id_map_[static_cast<size_t>(position)]);
    }

   private:
    const std::vector<int64_t>& id_map_;
    const faiss::IDSelector& selects_ids_;
};

// A copy keeps the caller's const parameters untouched while the selector is
// swapped, and keeps their dynamic type (an IVF sub-index insists on it).
std::unique_ptr<faiss::SearchParameters> copy_of(const faiss::SearchParameters& params) {
    if (auto ivf = dynamic_cast<const faiss::SearchParametersIVF*>(&params)) {
        return std::make_unique<faiss::SearchParametersIVF>(*ivf);
    }
    FAISS_THROW_IF_NOT_MSG(
            typeid(params) == typeid(faiss::SearchParameters),
            "IndexIDMap search: only SearchParameters and SearchParametersIVF are supported");
    return std::make_unique<faiss::SearchParameters>(params);
}

// Difference 1: faiss 1.7.3's IndexIDMap::search rejects any parameters
// ("search params not supported for this index"); later releases search the
// sub-index with the selector translated from external ids to positions, and
// that is what happens here.
void search_through_id_map(
        const faiss::IndexIDMap& id_mapped,
        int64_t n,
        const float* x,
        int64_t k,
        const faiss::SearchParameters& params,
        float* distances,
        int64_t* labels) {
    std::unique_ptr<faiss::SearchParameters> sub_params = copy_of(params);
    std::optional<SelectorThroughIdMap> sub_selector;
    if (params.sel) {
        sub_selector.emplace(id_mapped.id_map, *params.sel);
        sub_params->sel = &*sub_selector;
    }
    id_mapped.index->search(n, x, k, distances, labels, sub_params.get());
    for (int64_t i = 0; i < n * k; i++) {
        if (labels[i] >= 0) {
            labels[i] = id_mapped.id_map[static_cast<size_t>(labels[i])];
        }
    }
}

void search(
        const faiss::Index& index,
        int64_t n,
        const float* x,
        int64_t k,
        const faiss::SearchParameters* params,
        float* distances,
        int64_t* labels) {
    // Difference 2: faiss 1.7.3 searches an untrained IVF index without
    // complaint and returns only -1 labels, which a caller would take for "no
    // matches"; later releases fail ("IVF index is not trained").
    FAISS_THROW_IF_NOT_MSG(index.is_trained, "index is not trained");
    auto id_mapped = dynamic_cast<const faiss::IndexIDMap*>(&index);
    if (params && id_mapped) {
        search_through_id_map(*id_mapped, n, x, k, *params, distances, labels);
    } else {
        index.search(n, x, k, distances, labels, params);
    }
}

} // namespace

extern "C" {

/* ---- error_c.h ---------------------------------------------------------- */

const char* faiss_get_last_error() {
    return last_error;
}

/* ---- index_factory_c.h -------------------------------------------------- */

int faiss_index_factory(FaissIndex** p_index, int d, const char* description, FaissMetricType metric) {
    return guarded([&] {
        *p_index = handle_of<FaissIndex>(
                faiss::index_factory(d, description, static_cast<faiss::MetricType>(metric)));
    });
}

/* ---- Index_c.h ---------------------------------------------------------- */

void faiss_Index_free(FaissIndex* obj) {
    delete cpp<faiss::Index>(obj);
}

int faiss_Index_d(const FaissIndex* index) {
    return cpp<faiss::Index>(index)->d;
}

int faiss_Index_is_trained(const FaissIndex* index) {
    return cpp<faiss::Index>(index)->is_trained;
}

idx_t faiss_Index_ntotal(const FaissIndex* index) {
    return cpp<faiss::Index>(index)->ntotal;
}

FaissMetricType faiss_Index_metric_type(const FaissIndex* index) {
    return static_cast<FaissMetricType>(cpp<faiss::Index>(index)->metric_type);
}

int faiss_Index_train(FaissIndex* index, idx_t n, const float* x) {
    return guarded([&] { cpp<faiss::Index>(index)->train(n, x); });
}

int faiss_Index_add(FaissIndex* index, idx_t n, const float* x) {
    return guarded([&] { cpp<faiss::Index>(index)->add(n, x); });
}

int faiss_Index_add_with_ids(FaissIndex* index, idx_t n, const float* x, const idx_t* xids) {
    return guarded([&] { cpp<faiss::Index>(index)->add_with_ids(n, x, xids); });
}

int faiss_Index_search(const FaissIndex* index, idx_t n, const float* x, idx_t k, float* distances, idx_t* labels) {
    return guarded([&] { search(*cpp<faiss::Index>(index), n, x, k, nullptr, distances, labels); });
}

int faiss_Index_reset(FaissIndex* index) {
    return guarded([&] { cpp<faiss::Index>(index)->reset(); });
}

int faiss_Index_remove_ids(FaissIndex* index, const FaissIDSelector* sel, size_t* n_removed) {
    return guarded([&] {
        size_t removed = cpp<faiss::Index>(index)->remove_ids(*cpp<faiss::IDSelector>(sel));
        if (n_removed) {
            *n_removed = removed;
        }
    });
}

int faiss_Index_reconstruct(const FaissIndex* index, idx_t key, float* recons) {
    return guarded([&] { cpp<faiss::Index>(index)->reconstruct(key, recons); });
}

/* ---- index_io_c.h ------------------------------------------------------- */

int faiss_write_index(const FaissIndex* idx, FILE* f) {
    return guarded([&] { faiss::write_index(cpp<faiss::Index>(idx), f); });
}

int faiss_write_index_fname(const FaissIndex* idx, const char* fname) {
    return guarded([&] { faiss::write_index(cpp<faiss::Index>(idx), fname); });
}

int faiss_read_index(FILE* f, int io_flags, FaissIndex** p_out) {
    return guarded([&] { *p_out = handle_of<FaissIndex>(faiss::read_index(f, io_flags)); });
}

int faiss_read_index_fname(const char* fname, int io_flags, FaissIndex** p_out) {
    return guarded([&] { *p_out = handle_of<FaissIndex>(faiss::read_index(fname, io_flags)); });
}

/* ---- IndexIVF_c.h ------------------------------------------------------- */

FaissIndexIVF* faiss_IndexIVF_cast(FaissIndex* index) {
    return handle_of<FaissIndexIVF>(dynamic_cast<faiss::IndexIVF*>(cpp<faiss::Index>(index)));
}

size_t faiss_IndexIVF_nlist(const FaissIndexIVF* index) {
    return cpp<faiss::IndexIVF>(index)->nlist;
}

size_t faiss_IndexIVF_nprobe(const FaissIndexIVF* index) {
    return cpp<faiss::IndexIVF>(index)->nprobe;
}

void faiss_IndexIVF_set_nprobe(FaissIndexIVF* index, size_t nprobe) {
    cpp<faiss::IndexIVF>(index)->nprobe = nprobe;
}

/* ---- AutoTune_c.h ------------------------------------------------------- */

int faiss_ParameterSpace_new(FaissParameterSpace** space) {
    return guarded([&] { *space = handle_of<FaissParameterSpace>(new faiss::ParameterSpace()); });
}

void faiss_ParameterSpace_free(FaissParameterSpace* obj) {
    delete cpp<faiss::ParameterSpace>(obj);
}

int faiss_ParameterSpace_set_index_parameter(
        const FaissParameterSpace* space,
        FaissIndex* index,
        const char* name,
        double value) {
    return guarded([&] {
        cpp<faiss::ParameterSpace>(space)->set_index_parameter(cpp<faiss::Index>(index), name, value);
    });
}

/* ---- impl/AuxIndexStructures_c.h ---------------------------------------- */

void faiss_IDSelector_free(FaissIDSelector* obj) {
    delete cpp<faiss::IDSelector>(obj);
}

int faiss_IDSelector_is_member(const FaissIDSelector* sel, idx_t id) {
    return cpp<faiss::IDSelector>(sel)->is_member(id);
}

void faiss_IDSelectorRange_free(FaissIDSelectorRange* obj) {
    delete cpp<faiss::IDSelectorRange>(obj);
}

int faiss_IDSelectorRange_new(FaissIDSelectorRange** p_sel, idx_t imin, idx_t imax) {
    return guarded([&] { *p_sel = handle_of<FaissIDSelectorRange>(new faiss::IDSelectorRange(imin, imax)); });
}

int faiss_IDSelectorBatch_new(FaissIDSelectorBatch** p_sel, size_t n, const idx_t* indices) {
    return guarded([&] { *p_sel = handle_of<FaissIDSelectorBatch>(new faiss::IDSelectorBatch(n, indices)); });
}

/* ---- cmr_faiss_ext.h: upstream calls newer than 1.7.3 -------------------- */

void faiss_SearchParameters_free(FaissSearchParameters* obj) {
    delete cpp<faiss::SearchParameters>(obj);
}

int faiss_SearchParameters_new(FaissSearchParameters** p_sp, FaissIDSelector* sel) {
    return guarded([&] {
        auto params = new faiss::SearchParameters();
        params->sel = cpp<faiss::IDSelector>(sel);
        *p_sp = handle_of<FaissSearchParameters>(params);
    });
}

void faiss_SearchParametersIVF_free(FaissSearchParametersIVF* obj) {
    delete cpp<faiss::SearchParametersIVF>(obj);
}

int faiss_SearchParametersIVF_new(FaissSearchParametersIVF** p_sp) {
    return guarded([&] { *p_sp = handle_of<FaissSearchParametersIVF>(new faiss::SearchParametersIVF()); });
}

int faiss_SearchParametersIVF_new_with(
        FaissSearchParametersIVF** p_sp,
        FaissIDSelector* sel,
        size_t nprobe,
        size_t max_codes) {
    return guarded([&] {
        auto params = new faiss::SearchParametersIVF();
        params->sel = cpp<faiss::IDSelector>(sel);
        params->nprobe = nprobe;
        params->max_codes = max_codes;
        *p_sp = handle_of<FaissSearchParametersIVF>(params);
    });
}

size_t faiss_SearchParametersIVF_nprobe(const FaissSearchParametersIVF* params) {
    return cpp<faiss::SearchParametersIVF>(params)->nprobe;
}

void faiss_SearchParametersIVF_set_nprobe(FaissSearchParametersIVF* params, size_t nprobe) {
    cpp<faiss::SearchParametersIVF>(params)->nprobe = nprobe;
}

int faiss_Index_search_with_params(
        const FaissIndex* index,
        idx_t n,
        const float* x,
        idx_t k,
        const FaissSearchParameters* params,
        float* distances,
        idx_t* labels) {
    return guarded([&] {
        search(*cpp<faiss::Index>(index), n, x, k, cpp<faiss::SearchParameters>(params), distances, labels);
    });
}

int faiss_IDSelectorBitmap_new(FaissIDSelectorBitmap** p_sel, size_t n, const uint8_t* bitmap) {
    return guarded([&] { *p_sel = handle_of<FaissIDSelectorBitmap>(new faiss::IDSelectorBitmap(n, bitmap)); });
}

int faiss_IDSelectorArray_new(FaissIDSelectorArray** p_sel, size_t n, const idx_t* ids) {
    return guarded([&] { *p_sel = handle_of<FaissIDSelectorArray>(new faiss::IDSelectorArray(n, ids)); });
}

} // extern "C"
