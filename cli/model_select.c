/* Which model a command uses: --model DIR, else $CMRSEARCH_MODEL, else the
 * default model that ships with cmrsearch (models/default in the source
 * tree, share/cmrsearch/models/default once installed). */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cmr_cli.h"
#include "cmr_model.h"

static int has_model(const char *dir)
{
    char path[4096];
    struct stat st;
    snprintf(path, sizeof path, "%s/model.json", dir);
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

const char *cmr_cli_default_model(void)
{
    static const char *const candidates[] = {CMR_SOURCE_MODEL_DIR, CMR_INSTALLED_MODEL_DIR};
    for (size_t i = 0; i < sizeof candidates / sizeof *candidates; i++)
        if (has_model(candidates[i]))
            return candidates[i];
    return NULL;
}

const char *cmr_cli_model_dir(const char *explicit_dir)
{
    const char *env = getenv("CMRSEARCH_MODEL");
    if (explicit_dir)
        return explicit_dir;
    if (env && *env)
        return env;
    return cmr_cli_default_model();
}

int cmr_cli_open_model(const char *explicit_dir, cmr_store *store, int required, cmr_model **out)
{
    *out = NULL;
    const char *dir = cmr_cli_model_dir(explicit_dir);
    if (!dir) {
        if (!required)
            return 0;
        return cmr_fail(CMR_ENOTFOUND, "no model: give --model DIR (or set CMRSEARCH_MODEL); the default model "
                                       "is not installed");
    }
    int rc = cmr_model_open(dir, out);
    if (rc)
        return rc;
    if (store) {
        const char *name, *hash;
        unsigned dim;
        cmr_store_model(store, &name, &hash, &dim);
        if (name && *name && (strcmp(name, cmr_model_name(*out)) || strcmp(hash, cmr_model_hash(*out)) ||
                              dim != cmr_model_dim(*out))) {
            rc = cmr_fail(CMR_EMODEL, "the store's vectors come from model %s (weights %.12s..., dimension %u), not "
                                      "from %s (%s, weights %.12s..., dimension %u); vectors of two models are never "
                                      "mixed: use --model with the store's model, or move the store to this one with "
                                      "'cmrsearch index --db DIR --reembed --model %s'",
                          name, hash, dim, dir, cmr_model_name(*out), cmr_model_hash(*out), cmr_model_dim(*out), dir);
            cmr_model_close(*out);
            *out = NULL;
        }
    }
    return rc;
}
