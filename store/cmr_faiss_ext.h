/* FAISS C API calls that upstream added after 1.7.3, the version whose C API
 * headers Debian ships. Names and signatures follow upstream's current
 * c_api (Index_c.h, IndexIVF_c.h, impl/AuxIndexStructures_c.h) so that this
 * header can be dropped once a system libfaiss_c provides them; the
 * implementation lives in faiss_c_api.cpp with the rest of our C API subset.
 *
 * Ownership follows upstream: a SearchParameters object only borrows its
 * selector, and the bitmap and array selectors only borrow their arrays; each
 * borrowed object must outlive every search that uses it. */
#ifndef CMR_FAISS_EXT_H
#define CMR_FAISS_EXT_H

#include <stddef.h>
#include <stdint.h>

#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/IndexIVF_c.h>
#include <faiss/c_api/faiss_c.h>
#include <faiss/c_api/impl/AuxIndexStructures_c.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Per-search options; sel (may be NULL) restricts results to its members. */
FAISS_DECLARE_CLASS(SearchParameters)
FAISS_DECLARE_DESTRUCTOR(SearchParameters)

int faiss_SearchParameters_new(FaissSearchParameters **p_sp, FaissIDSelector *sel);

/* Options for IVF indexes: the same C type as FaissSearchParameters. */
FAISS_DECLARE_CLASS_INHERITED(SearchParametersIVF, SearchParameters)
FAISS_DECLARE_DESTRUCTOR(SearchParametersIVF)

/* nprobe 1, max_codes 0 (no limit), no selector. */
int faiss_SearchParametersIVF_new(FaissSearchParametersIVF **p_sp);
int faiss_SearchParametersIVF_new_with(FaissSearchParametersIVF **p_sp, FaissIDSelector *sel, size_t nprobe,
                                       size_t max_codes);

FAISS_DECLARE_GETTER_SETTER(SearchParametersIVF, size_t, nprobe)

/* Like faiss_Index_search; params may be NULL. */
int faiss_Index_search_with_params(const FaissIndex *index, idx_t n, const float *x, idx_t k,
                                   const FaissSearchParameters *params, float *distances, idx_t *labels);

/* Selects id i iff i >> 3 < n and bit (i & 7) of bitmap[i >> 3] is set;
 * n is the bitmap's length in bytes. */
FAISS_DECLARE_CLASS(IDSelectorBitmap)

int faiss_IDSelectorBitmap_new(FaissIDSelectorBitmap **p_sel, size_t n, const uint8_t *bitmap);

/* Selects the n ids listed (unsorted, linear membership test). Not in
 * upstream's C API; shaped like its other selector constructors. */
FAISS_DECLARE_CLASS(IDSelectorArray)

int faiss_IDSelectorArray_new(FaissIDSelectorArray **p_sel, size_t n, const idx_t *ids);

#ifdef __cplusplus
}
#endif

#endif
