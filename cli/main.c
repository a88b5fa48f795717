/* cmrsearch: case-retrieval search for cardiac MRI.  All of the program is in
 * the cmr_cli library, so that tests run the same code in-process. */
#include "cmr_cli.h"

int main(int argc, char **argv)
{
    return cmr_cli_main(argc, argv);
}
