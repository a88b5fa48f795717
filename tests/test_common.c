/* common/: error reporting and SHA-256 / HMAC-SHA-256 against published vectors
 * (FIPS 180-4 examples, RFC 4231). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "cmr_error.h"
#include "cmr_sha256.h"

static void hex_of_sha(const char *msg, size_t len, char out[65])
{
    uint8_t d[32];
    cmr_sha256_digest(msg, len, d);
    cmr_hex(d, 32, out);
}

static void test_sha256_vectors(void **state)
{
    (void)state;
    char hex[65];
    hex_of_sha("", 0, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    hex_of_sha("abc", 3, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    hex_of_sha(two_blocks, strlen(two_blocks), hex);
    assert_string_equal(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

static void test_sha256_incremental_million_a(void **state)
{
    (void)state;
    cmr_sha256 ctx;
    cmr_sha256_init(&ctx);
    char chunk[1024]; /* step below never exceeds 1009 */
    memset(chunk, 'a', sizeof chunk);
    /* Odd-sized pieces cross block boundaries in every way. */
    size_t done = 0, step = 7;
    while (done < 1000000) {
        size_t n = 1000000 - done < step ? 1000000 - done : step;
        cmr_sha256_update(&ctx, chunk, n);
        done += n;
        step = step % 997 + 13;
    }
    uint8_t d[32];
    char hex[65];
    cmr_sha256_final(&ctx, d);
    cmr_hex(d, 32, hex);
    assert_string_equal(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

/* The same vectors through the portable code when SHA-NI is in use. */
static void test_sha256_portable(void **state)
{
    int accelerated = cmr_sha256_accelerated(1);
    cmr_sha256_accelerated(0);
    test_sha256_vectors(state);
    test_sha256_incremental_million_a(state);
    cmr_sha256_accelerated(1);
    if (!accelerated)
        print_message("SHA-NI not available here: the portable code was tested twice\n");
}

static void test_hmac_rfc4231(void **state)
{
    (void)state;
    uint8_t mac[32];
    char hex[65];
    uint8_t key1[20];
    memset(key1, 0x0b, sizeof key1);
    cmr_hmac_sha256(key1, sizeof key1, "Hi There", 8, mac);
    cmr_hex(mac, 32, hex);
    assert_string_equal(hex, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");

    cmr_hmac_sha256("Jefe", 4, "what do ya want for nothing?", 28, mac);
    cmr_hex(mac, 32, hex);
    assert_string_equal(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");

    /* Test case 6: a key longer than the block is hashed first. */
    uint8_t key6[131];
    memset(key6, 0xaa, sizeof key6);
    const char *msg6 = "Test Using Larger Than Block-Size Key - Hash Key First";
    cmr_hmac_sha256(key6, sizeof key6, msg6, strlen(msg6), mac);
    cmr_hex(mac, 32, hex);
    assert_string_equal(hex, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
}

static void test_error_messages(void **state)
{
    (void)state;
    cmr_clear_error();
    assert_string_equal(cmr_errmsg(), "");
    assert_int_equal(cmr_fail(CMR_EFORMAT, "row %d: bad %s", 3, "date"), CMR_EFORMAT);
    assert_string_equal(cmr_errmsg(), "row 3: bad date");
    assert_int_equal(cmr_fail_context(CMR_EFORMAT, "%s: ", "manifest.json"), CMR_EFORMAT);
    assert_string_equal(cmr_errmsg(), "manifest.json: row 3: bad date");
    for (int code = CMR_ERR_MIN_; code <= 0; code++)
        assert_string_not_equal(cmr_strerror(code), "unknown error");
    assert_string_equal(cmr_strerror(-999), "unknown error");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha256_vectors),
        cmocka_unit_test(test_sha256_incremental_million_a),
        cmocka_unit_test(test_sha256_portable),
        cmocka_unit_test(test_hmac_rfc4231),
        cmocka_unit_test(test_error_messages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
