/*  auth.c - the auth actor: verifies the JWT of every WebSocket handshake.

    Message vocabulary (docs/ARCHITECTURE.md). Requests come from DEALERs to
    a ROUTER bound at RTWS_EP_AUTH, so the ROUTER sees an identity frame in
    front of each request and every reply goes back to that identity.

    | direction | message             | picture | meaning |
    |-----------|---------------------|---------|---------|
    | in        | `VERIFY seq token`  | `s8s`   | verify a JWT; seq is the caller's request number |
    | out       | `OK seq user exp`   | `s8s8`  | valid; user per PROTOCOL.md section 2 rule 4; exp Unix seconds, 0 = no `exp` |
    | out       | `FAIL seq reason 0` | `s8s8`  | invalid; reason is a short log text (`expired`, `bad signature`, ...) |

    Pipe (from the owner): `$TERM`; `READY` -> "i" 1 when set up, 0 when the
    configuration was refused (the reason is logged; the actor then serves
    nothing and waits for $TERM). rtwsd asks once at start-up.
    `CONFIG config` ("p", a const rtws_config_t * owned by rtwsd.c, on
    SIGHUP) -> "i" 1 when its JWT_ALG and key were taken, 0 when refused
    (the old configuration stays; rtwsd then keeps the old one everywhere).

    This is the only file of rtwsd that includes jwt.h. libjwt 1.10.2 checks
    the signature and nothing else, accepts any HS* token under an HMAC key
    and, under an RSA configuration, would verify an HS256 token that used
    the public key PEM as its HMAC secret. So every check around the
    signature is ours, in this order, stopping at the first failure (the
    FAIL reason in brackets). Rules 1 to 4 are src/jwt_shape.c, a pure
    module so that they can be fuzzed without libjwt:

    1. Length: empty [empty token] or longer than RTWS_TOKEN_MAX
       [token too long]; libjwt never sees such input.
    2. Shape: exactly three non-empty base64url segments, no padding, only
       [A-Za-z0-9_-] [malformed token].
    3. Header, decoded here with jansson: a JSON object without duplicate
       keys or raw NUL bytes (libjwt would read less), without "crit" (we
       implement no extension), and whose "typ", if any, is "JWT" in any
       case (libjwt 1.10 refuses other strings, and we would rather say
       why) [bad header]; its "alg" must equal JWT_ALG exactly, so
       "none", another HS size and HS/RS confusion never reach libjwt
       [alg mismatch].
    4. Payload, decoded here with jansson (libjwt's grant getters lose the
       claim types): a JSON object without duplicate keys or raw NUL bytes
       [bad payload].
    5. jwt_decode with the configured key, never NULL [bad signature], then
       jwt_get_alg must still be JWT_ALG [alg mismatch]. The signature
       covers the segment text we decoded, so our reading is authenticated.
    6. exp and nbf, when present, must be JSON numbers [bad exp, bad nbf];
       with 0 s leeway, now >= exp [expired] and now < nbf [not yet valid].
    7. With JWT_AUDIENCE set, aud must be that string or an array holding
       it [bad audience]; with JWT_ISSUER set, iss must be that exact string
       [bad issuer]. Unset, the claims are not looked at.

    The user id is the first usable claim of sub, user_id, else "anon". A
    non-empty string is used as is, cut to RTWS_USER_MAX bytes at a UTF-8
    character boundary (rtws.h; jansson has already rejected invalid UTF-8
    and \u0000). An integer, or a real with an integral value in int64
    range, becomes its decimal string. An empty string, any other real,
    a bool, null, array or object is not usable and the next claim is
    tried: the signature vouches for the token, so an odd claim type is an
    issuer quirk, not an attack, and "anon" is the least privileged answer.

    A real exp is reported rounded down, so the gateway never keeps a
    connection past the token's life; values beyond int64 are clamped.
*/
#include "auth.h"
#include "config.h"
#include "jwt_shape.h"
#include "inproc.h"
#include "log.h"
#include "rtws.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <jwt.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <string.h>
#include <strings.h>
#include <time.h>

//  FAIL reasons; the gateway only logs them, tests compare them.
#define AUTH_EMPTY          JWT_SHAPE_EMPTY
#define AUTH_TOO_LONG       JWT_SHAPE_TOO_LONG
#define AUTH_MALFORMED      JWT_SHAPE_MALFORMED
#define AUTH_BAD_HEADER     JWT_SHAPE_BAD_HEADER
#define AUTH_ALG_MISMATCH   JWT_SHAPE_ALG_MISMATCH
#define AUTH_BAD_SIGNATURE  "bad signature"
#define AUTH_BAD_PAYLOAD    JWT_SHAPE_BAD_PAYLOAD
#define AUTH_BAD_EXP        "bad exp"
#define AUTH_BAD_NBF        "bad nbf"
#define AUTH_EXPIRED        "expired"
#define AUTH_NOT_YET_VALID  "not yet valid"
#define AUTH_BAD_AUDIENCE   "bad audience"
#define AUTH_BAD_ISSUER     "bad issuer"

typedef struct {
    zsock_t *pipe;              //  our end of the owner's pipe
    zsock_t *router;            //  ROUTER at RTWS_EP_AUTH, requests from gateways
    zpoller_t *poller;          //  pipe + router
    const rtws_config_t *config;  //  read-only, owned by rtwsd.c, outlives us
    jwt_alg_t alg;              //  JWT_ALG as libjwt knows it, never NONE
    const unsigned char *key;   //  secret (HS*) or PEM public key, inside config
    int key_len;                //  its length in bytes, > 0
} auth_t;

//  The outcome of one verification.
typedef struct {
    const char *reason;         //  NULL when the token is valid, else a reason
    char user [RTWS_USER_MAX + 1];  //  user id when valid
    uint64_t exp;               //  Unix seconds, 0 when the token has no exp
} verdict_t;


//  --------------------------------------------------------------------------
//  Checks that a PEM public key suits the algorithm, so that a wrong key
//  file stops start-up instead of failing every handshake as "bad signature".

static int
s_check_public_key (const char *alg, const unsigned char *pem, int pem_len)
{
    BIO *bio = BIO_new_mem_buf (pem, pem_len);
    EVP_PKEY *pkey = bio? PEM_read_bio_PUBKEY (bio, NULL, NULL, NULL): NULL;
    BIO_free (bio);
    if (!pkey) {
        log_error ("auth", "JWT_PUBLIC_KEY_FILE holds no PEM public key");
        return -1;
    }
    int rc = 0;
    int bits = EVP_PKEY_bits (pkey);
    if (alg [0] == 'R') {
        if (EVP_PKEY_base_id (pkey) != EVP_PKEY_RSA) {
            log_error ("auth", "JWT_ALG=%s needs an RSA public key", alg);
            rc = -1;
        }
        else
        if (bits < 2048)
            log_warn ("auth", "the RSA public key has only %d bits", bits);
    }
    else {
        //  ES256, ES384, ES512 use P-256, P-384, P-521
        int want = strcmp (alg, "ES256") == 0? 256: strcmp (alg, "ES384") == 0? 384: 521;
        if (EVP_PKEY_base_id (pkey) != EVP_PKEY_EC || bits != want) {
            log_error ("auth", "JWT_ALG=%s needs an EC P-%d public key", alg, want);
            rc = -1;
        }
    }
    EVP_PKEY_free (pkey);
    return rc;
}


//  --------------------------------------------------------------------------
//  Constructor: resolves the key and binds the ROUTER. Returns NULL, having
//  logged why, when the configuration cannot verify anything.

//  Resolves JWT_ALG and its key from a configuration: the secret for HS*,
//  the checked PEM public key otherwise. Returns 0, or -1 having logged why.
static int
s_key_resolve (const rtws_config_t *config, jwt_alg_t *alg_p,
               const unsigned char **key_p, int *key_len_p)
{
    const char *alg_name = config->jwt_alg? config->jwt_alg: "";
    jwt_alg_t alg = jwt_str_alg (alg_name);
    if (alg == JWT_ALG_INVAL || alg == JWT_ALG_NONE) {
        log_error ("auth", "JWT_ALG=%s is not supported by libjwt %s", alg_name,
                   "1.10 (HS256/384/512, RS256/384/512, ES256/384/512)");
        return -1;
    }
    const unsigned char *key;
    size_t key_len;
    if (alg_name [0] == 'H') {
        key = (const unsigned char *) config->jwt_secret;
        key_len = config->jwt_secret? strlen (config->jwt_secret): 0;
    }
    else {
        key = (const unsigned char *) config->jwt_public_key;
        key_len = config->jwt_public_key? config->jwt_public_key_len: 0;
    }
    //  libjwt treats a NULL key as "skip the signature check"
    if (!key || key_len == 0 || key_len > INT_MAX) {
        log_error ("auth", "JWT_ALG=%s has no usable %s", alg_name,
                   alg_name [0] == 'H'? "JWT_SECRET": "JWT_PUBLIC_KEY_FILE");
        return -1;
    }
    if (alg_name [0] != 'H'
    &&  s_check_public_key (alg_name, key, (int) key_len) == -1)
        return -1;
    *alg_p = alg;
    *key_p = key;
    *key_len_p = (int) key_len;
    return 0;
}

static auth_t *
s_auth_new (zsock_t *pipe, const rtws_config_t *config)
{
    assert (config);
    jwt_alg_t alg;
    const unsigned char *key;
    int key_len;
    if (s_key_resolve (config, &alg, &key, &key_len) == -1)
        return NULL;

    auth_t *self = (auth_t *) zmalloc (sizeof (auth_t));
    assert (self);
    self->pipe = pipe;
    self->config = config;
    self->alg = alg;
    self->key = key;
    self->key_len = key_len;
    self->router = zsock_new (ZMQ_ROUTER);
    assert (self->router);
    if (zsock_bind (self->router, "%s", RTWS_EP_AUTH) == -1) {
        log_error ("auth", "cannot bind %s: %s", RTWS_EP_AUTH, zmq_strerror (zmq_errno ()));
        zsock_destroy (&self->router);
        free (self);
        return NULL;
    }
    self->poller = zpoller_new (self->pipe, self->router, NULL);
    assert (self->poller);
    return self;
}


//  --------------------------------------------------------------------------
//  Destructor

static void
s_auth_destroy (auth_t **self_p)
{
    assert (self_p);
    if (*self_p) {
        auth_t *self = *self_p;
        zpoller_destroy (&self->poller);
        inproc_bound_destroy (&self->router, RTWS_EP_AUTH);
        free (self);
        *self_p = NULL;
    }
}


//  --------------------------------------------------------------------------
//  Reads a numeric claim as whole seconds. Returns 0 when absent, 1 when
//  present (floor and ceil set; equal for an integer), -1 when not a number.

static int
s_number_claim (json_t *payload, const char *name, int64_t *floor_p, int64_t *ceil_p)
{
    json_t *claim = json_object_get (payload, name);
    if (!claim)
        return 0;
    if (json_is_integer (claim)) {
        *floor_p = *ceil_p = (int64_t) json_integer_value (claim);
        return 1;
    }
    if (!json_is_real (claim))
        return -1;
    double value = json_real_value (claim);
    //  0x1p63 is the first double past INT64_MAX; -0x1p63 is INT64_MIN exactly
    if (value >= 0x1p63)
        *floor_p = *ceil_p = INT64_MAX;
    else
    if (value <= -0x1p63)
        *floor_p = *ceil_p = INT64_MIN;
    else {
        //  The cast truncates toward zero; no libm needed
        int64_t whole = (int64_t) value;
        *floor_p = whole - ((double) whole > value);
        *ceil_p = whole + ((double) whole < value);
    }
    return 1;
}

//  True when the configured audience is aud itself or one of its strings.

static bool
s_audience_ok (json_t *aud, const char *audience)
{
    if (json_is_string (aud))
        return strcmp (json_string_value (aud), audience) == 0;
    if (json_is_array (aud)) {
        size_t index;
        json_t *item;
        json_array_foreach (aud, index, item)
            if (json_is_string (item) && strcmp (json_string_value (item), audience) == 0)
                return true;
    }
    return false;
}

//  Writes a user id from one claim into user; false when the claim is absent
//  or of no usable type (see the rules at the top of this file).

static bool
s_user_from_claim (json_t *claim, char *user)
{
    if (json_is_string (claim)) {
        const char *text = json_string_value (claim);
        size_t len = json_string_length (claim);
        if (len == 0)
            return false;
        if (len > RTWS_USER_MAX) {
            //  Back up to the lead byte of the character we would split
            len = RTWS_USER_MAX;
            while (len > 0 && ((unsigned char) text [len] & 0xC0) == 0x80)
                len--;
        }
        memcpy (user, text, len);
        user [len] = 0;
        return true;
    }
    if (json_is_integer (claim)) {
        snprintf (user, RTWS_USER_MAX + 1, "%" JSON_INTEGER_FORMAT, json_integer_value (claim));
        return true;
    }
    if (json_is_real (claim)) {
        double value = json_real_value (claim);
        if (value >= 0x1p63 || value < -0x1p63 || (double) (int64_t) value != value)
            return false;
        snprintf (user, RTWS_USER_MAX + 1, "%" PRId64, (int64_t) value);
        return true;
    }
    return false;
}


//  --------------------------------------------------------------------------
//  The claim checks once the signature has been verified (rules 6-7).

static const char *
s_check_claims (auth_t *self, json_t *payload, verdict_t *verdict)
{
    int64_t now = (int64_t) time (NULL);
    int64_t exp_floor = 0, exp_ceil = 0;
    int has_exp = s_number_claim (payload, "exp", &exp_floor, &exp_ceil);
    if (has_exp == -1)
        return AUTH_BAD_EXP;
    int64_t nbf_floor = 0, nbf_ceil = 0;
    int has_nbf = s_number_claim (payload, "nbf", &nbf_floor, &nbf_ceil);
    if (has_nbf == -1)
        return AUTH_BAD_NBF;
    //  now is whole seconds, so now >= exp exactly when now >= ceil (exp)
    if (has_exp && now >= exp_ceil)
        return AUTH_EXPIRED;
    if (has_nbf && now < nbf_ceil)
        return AUTH_NOT_YET_VALID;

    const char *audience = self->config->jwt_audience;
    if (audience && !s_audience_ok (json_object_get (payload, "aud"), audience))
        return AUTH_BAD_AUDIENCE;
    const char *issuer = self->config->jwt_issuer;
    if (issuer) {
        json_t *iss = json_object_get (payload, "iss");
        if (!json_is_string (iss) || strcmp (json_string_value (iss), issuer) != 0)
            return AUTH_BAD_ISSUER;
    }

    if (has_exp) {
        //  Not expired: exp > now > 0, so floor (exp) >= now is a real time
        assert (exp_floor >= now && exp_floor > 0);
        verdict->exp = (uint64_t) exp_floor;
    }
    if (!s_user_from_claim (json_object_get (payload, "sub"), verdict->user)
    &&  !s_user_from_claim (json_object_get (payload, "user_id"), verdict->user))
        strcpy (verdict->user, "anon");
    return NULL;
}


//  --------------------------------------------------------------------------
//  Verifies one token of size bytes (not NUL-terminated, may hold anything)
//  and fills verdict. Never logs the token.

static void
s_verify (auth_t *self, const char *data, size_t size, verdict_t *verdict)
{
    memset (verdict, 0, sizeof *verdict);
    //  Rules 1-4, before libjwt sees anything (src/jwt_shape.c)
    json_t *payload = NULL;
    verdict->reason = jwt_shape_check (data, size, self->config->jwt_alg, &payload);
    if (verdict->reason)
        return;
    //  Rule 5: libjwt wants a C string; size <= RTWS_TOKEN_MAX and no NUL
    char token [RTWS_TOKEN_MAX + 1];
    memcpy (token, data, size);
    token [size] = 0;
    jwt_t *jwt = NULL;
    if (jwt_decode (&jwt, token, self->key, self->key_len) != 0 || !jwt)
        verdict->reason = AUTH_BAD_SIGNATURE;
    else
    if (jwt_get_alg (jwt) != self->alg)
        verdict->reason = AUTH_ALG_MISMATCH;
    else
        verdict->reason = s_check_claims (self, payload, verdict);
    jwt_free (jwt);
    json_decref (payload);
}


//  --------------------------------------------------------------------------
//  Handles one VERIFY from a gateway.

static void
s_handle_verify (auth_t *self)
{
    zframe_t *identity = NULL;
    char *command = NULL;
    uint64_t seq = 0;
    zframe_t *token = NULL;
    if (zsock_recv (self->router, "fs8f", &identity, &command, &seq, &token) == -1)
        return;                 //  interrupted
    //  Requests come only from our own gateway: a bad one is our bug
    if (!identity || !command || strcmp (command, "VERIFY") != 0 || !token) {
        log_error ("auth", "E: invalid request '%s'", command? command: "(none)");
        assert (false);
    }
    else {
        verdict_t verdict;
        s_verify (self, (const char *) zframe_data (token), zframe_size (token), &verdict);
        if (verdict.reason) {
            log_debug ("auth", "seq %" PRIu64 ": token rejected: %s", seq, verdict.reason);
            zsock_send (self->router, "fs8s8", identity, "FAIL", seq, verdict.reason,
                        (uint64_t) 0);
        }
        else {
            log_debug ("auth", "seq %" PRIu64 ": token accepted for user %s", seq, verdict.user);
            zsock_send (self->router, "fs8s8", identity, "OK", seq, verdict.user, verdict.exp);
        }
    }
    zframe_destroy (&identity);
    zstr_free (&command);
    zframe_destroy (&token);
}

//  Handles one command from the owner. Returns -1 on $TERM.

static int
s_handle_pipe (auth_t *self)
{
    zmsg_t *msg = zmsg_recv (self->pipe);
    if (!msg)
        return -1;              //  interrupted
    char *command = zmsg_popstr (msg);
    int rc = 0;
    if (command && strcmp (command, "$TERM") == 0)
        rc = -1;
    else
    if (command && strcmp (command, "READY") == 0)
        //  rtwsd asks once at start-up: 1 here, 0 from a refused set-up
        zsock_send (self->pipe, "i", 1);
    else
    if (command && strcmp (command, "CONFIG") == 0) {
        //  SIGHUP: a new configuration (owned by rtwsd.c). Taken only when its
        //  algorithm and key are usable; otherwise the old one stays.
        zframe_t *frame = zmsg_pop (msg);
        assert (frame && zframe_size (frame) == sizeof (void *));
        const rtws_config_t *config;
        memcpy (&config, zframe_data (frame), sizeof config);
        zframe_destroy (&frame);
        jwt_alg_t alg;
        const unsigned char *key;
        int key_len;
        if (s_key_resolve (config, &alg, &key, &key_len) == 0) {
            self->config = config;
            self->alg = alg;
            self->key = key;
            self->key_len = key_len;
            zsock_send (self->pipe, "i", 1);
        }
        else
            zsock_send (self->pipe, "i", 0);
    }
    else {
        log_error ("auth", "E: invalid pipe command '%s'", command? command: "");
        assert (false);
    }
    zstr_free (&command);
    zmsg_destroy (&msg);
    return rc;
}


//  --------------------------------------------------------------------------
//  The actor; args is a const rtws_config_t * that outlives it.

void
auth_actor (zsock_t *pipe, void *args)
{
    rtws_thread_name ("rtws-auth");
    auth_t *self = s_auth_new (pipe, (const rtws_config_t *) args);
    if (!self) {
        //  Set-up failed (the reason is logged). Stay alive until $TERM and
        //  answer READY with 0, so the owner learns it and destroys us
        //  without racing czmq's exit signal.
        zsock_signal (pipe, 0);
        while (true) {
            char *command = zstr_recv (pipe);
            if (!command)
                break;
            bool term = streq (command, "$TERM");
            if (streq (command, "READY"))
                zsock_send (pipe, "i", 0);
            zstr_free (&command);
            if (term)
                break;
        }
    }
    else {
        zsock_signal (pipe, 0);
        log_debug ("auth", "ready: %s at %s", self->config->jwt_alg, RTWS_EP_AUTH);
        while (true) {
            void *which = zpoller_wait (self->poller, -1);
            if (which == self->pipe) {
                if (s_handle_pipe (self) == -1)
                    break;
            }
            else
            if (which == self->router)
                s_handle_verify (self);
            else
                break;          //  interrupted or context terminated
        }
        s_auth_destroy (&self);
    }
    //  libjwt's HMAC and RSA calls leave per-thread OpenSSL state behind
    OPENSSL_thread_stop ();
}


//  --------------------------------------------------------------------------
//  Self test: the auth actor alone, with the test playing the gateway.

#define TEST_SECRET     "test-secret-not-for-production"
#define TEST_AUDIENCE   "rtws-test"
#define TEST_ISSUER     "https://issuer.test"
#define TEST_TIMEOUT    5000    //  msecs; a missing reply is a failure

//  Long strings for the user id limit (RTWS_USER_MAX is 256)
#define S16   "aaaaaaaaaaaaaaaa"
#define S64   S16 S16 S16 S16
#define S254  S64 S64 S64 S16 S16 S16 "aaaaaaaaaaaaaa"
#define S256  S64 S64 S64 S64

//  Each configuration runs its own auth actor
typedef enum {
    CFG_HS256, CFG_HS384, CFG_HS512, CFG_HS256_AUD, CFG_HS256_ISS, CFG_RS256, CFG_ES256
} test_cfg_t;

//  How a row's token is made
typedef enum {
    MAKE_RAW,           //  raw is the token
    MAKE_LIBJWT,        //  libjwt signs claims with alg and key
    MAKE_TAMPER,        //  as MAKE_LIBJWT, then the payload is swapped for raw
    MAKE_HMAC,          //  hand-made header and claims, HMAC alg with TEST_SECRET
    MAKE_UNSIGNED,      //  hand-made header and claims, raw is the signature text
    MAKE_SIZED,         //  a valid HS256 token of exactly size bytes, user "sized"
    MAKE_FILLER         //  size bytes of 'A'
} test_make_t;

//  Signing keys; the PEM files come from tests/fixtures
typedef enum {
    KEY_SECRET, KEY_WRONG_SECRET, KEY_RS_PRIVATE, KEY_RS_WRONG_PRIVATE,
    KEY_ES_PRIVATE, KEY_RS_PUBLIC, KEY_ES_PUBLIC, KEY_COUNT
} test_key_t;

static const char *s_key_files [KEY_COUNT] = {
    NULL, NULL, "rs256-private.pem", "rs256-wrong-private.pem",
    "es256-private.pem", "rs256-public.pem", "es256-public.pem"
};

typedef struct {
    const char *name;
    test_cfg_t cfg;
    test_make_t make;
    const char *alg;        //  LIBJWT, TAMPER, HMAC: signing algorithm
    test_key_t key;         //  LIBJWT, TAMPER: signing key
    const char *header;     //  HMAC, UNSIGNED: header JSON
    const char *claims;     //  LIBJWT, TAMPER, HMAC, UNSIGNED: claims JSON
    const char *raw;        //  see test_make_t
    size_t size;            //  SIZED, FILLER
    bool libjwt_accepts;    //  the row guards a hole in libjwt: prove it is there
    const char *verdict;    //  "OK", else the FAIL reason
    const char *user;       //  OK: expected user id
    const char *exp;        //  OK: expected exp ("0" = none)
} test_row_t;

//  In claims and exp, NOW, NOW+n and NOW-n stand for Unix times; the text
//  after n is kept, so NOW-1.5 reads (now-1).5, half a second ago.
#define HS256_HEADER  "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"
#define ALICE         "{\"sub\":\"alice\",\"exp\":NOW+3600}"

static const test_row_t s_rows [] = {
    //  Signature and algorithm
    { .name = "good HS256", .cfg = CFG_HS256, .make = MAKE_LIBJWT, .alg = "HS256",
      .claims = ALICE, .verdict = "OK", .user = "alice", .exp = "NOW+3600" },
    { .name = "good HS256 without exp", .cfg = CFG_HS256, .make = MAKE_LIBJWT, .alg = "HS256",
      .claims = "{\"sub\":\"alice\"}", .verdict = "OK", .user = "alice", .exp = "0" },
    { .name = "wrong secret", .cfg = CFG_HS256, .make = MAKE_LIBJWT, .alg = "HS256",
      .key = KEY_WRONG_SECRET, .claims = ALICE, .verdict = AUTH_BAD_SIGNATURE },
    { .name = "payload swapped after signing", .cfg = CFG_HS256, .make = MAKE_TAMPER,
      .alg = "HS256", .claims = ALICE, .raw = "{\"sub\":\"admin\",\"exp\":NOW+3600}",
      .verdict = AUTH_BAD_SIGNATURE },
    { .name = "alg none, empty signature", .cfg = CFG_HS256, .make = MAKE_UNSIGNED,
      .header = "{\"alg\":\"none\",\"typ\":\"JWT\"}", .claims = ALICE, .raw = "",
      .verdict = AUTH_MALFORMED },
    { .name = "alg none, some signature", .cfg = CFG_HS256, .make = MAKE_UNSIGNED,
      .header = "{\"alg\":\"none\",\"typ\":\"JWT\"}", .claims = ALICE, .raw = "c2lnbmF0dXJl",
      .verdict = AUTH_ALG_MISMATCH },
    { .name = "alg in lower case", .cfg = CFG_HS256, .make = MAKE_HMAC, .alg = "HS256",
      .header = "{\"alg\":\"hs256\",\"typ\":\"JWT\"}", .claims = ALICE,
      .verdict = AUTH_ALG_MISMATCH },
    { .name = "HS512 token while JWT_ALG=HS256", .cfg = CFG_HS256, .make = MAKE_LIBJWT,
      .alg = "HS512", .claims = ALICE, .libjwt_accepts = true, .verdict = AUTH_ALG_MISMATCH },
    { .name = "HS384 token while JWT_ALG=HS256", .cfg = CFG_HS256, .make = MAKE_LIBJWT,
      .alg = "HS384", .claims = ALICE, .libjwt_accepts = true, .verdict = AUTH_ALG_MISMATCH },
    { .name = "RS256 token while JWT_ALG=HS256", .cfg = CFG_HS256, .make = MAKE_LIBJWT,
      .alg = "RS256", .key = KEY_RS_PRIVATE, .claims = ALICE, .verdict = AUTH_ALG_MISMATCH },
    { .name = "header without alg", .cfg = CFG_HS256, .make = MAKE_HMAC, .alg = "HS256",
      .header = "{\"typ\":\"JWT\"}", .claims = ALICE, .verdict = AUTH_BAD_HEADER },
    { .name = "header alg is a number", .cfg = CFG_HS256, .make = MAKE_HMAC, .alg = "HS256",
      .header = "{\"alg\":256}", .claims = ALICE, .verdict = AUTH_BAD_HEADER },
    { .name = "header alg given twice", .cfg = CFG_HS256, .make = MAKE_HMAC, .alg = "HS256",
      .header = "{\"alg\":\"none\",\"alg\":\"HS256\"}", .claims = ALICE,
      .libjwt_accepts = true, .verdict = AUTH_BAD_HEADER },
    { .name = "header with crit", .cfg = CFG_HS256, .make = MAKE_HMAC, .alg = "HS256",
      .header = "{\"alg\":\"HS256\",\"crit\":[\"b64\"],\"b64\":false}", .claims = ALICE,
      .libjwt_accepts = true, .verdict = AUTH_BAD_HEADER },
    { .name = "header typ at+jwt", .cfg = CFG_HS256, .make = MAKE_HMAC, .alg = "HS256",
      .header = "{\"alg\":\"HS256\",\"typ\":\"at+jwt\"}", .claims = ALICE,
      .verdict = AUTH_BAD_HEADER },
    { .name = "header typ in lower case", .cfg = CFG_HS256, .make = MAKE_HMAC, .alg = "HS256",
      .header = "{\"alg\":\"HS256\",\"typ\":\"jwt\"}", .claims = ALICE,
      .verdict = "OK", .user = "alice", .exp = "NOW+3600" },
    { .name = "header not JSON", .cfg = CFG_HS256, .make = MAKE_UNSIGNED,
      .header = "hello", .claims = ALICE, .raw = "c2lnbmF0dXJl", .verdict = AUTH_BAD_HEADER },
    { .name = "header a JSON array", .cfg = CFG_HS256, .make = MAKE_UNSIGNED,
      .header = "[\"HS256\"]", .claims = ALICE, .raw = "c2lnbmF0dXJl",
      .verdict = AUTH_BAD_HEADER },
    { .name = "payload not JSON", .cfg = CFG_HS256, .make = MAKE_HMAC, .alg = "HS256",
      .header = HS256_HEADER, .claims = "sub=alice", .verdict = AUTH_BAD_PAYLOAD },
    { .name = "payload a JSON array", .cfg = CFG_HS256, .make = MAKE_HMAC, .alg = "HS256",
      .header = HS256_HEADER, .claims = "[\"alice\"]", .libjwt_accepts = true,
      .verdict = AUTH_BAD_PAYLOAD },
    { .name = "payload sub given twice", .cfg = CFG_HS256, .make = MAKE_HMAC, .alg = "HS256",
      .header = HS256_HEADER, .claims = "{\"sub\":\"alice\",\"sub\":\"admin\"}",
      .libjwt_accepts = true, .verdict = AUTH_BAD_PAYLOAD },

    //  exp and nbf, 0 s leeway
    { .name = "expired an hour ago", .cfg = CFG_HS256, .make = MAKE_LIBJWT, .alg = "HS256",
      .claims = "{\"sub\":\"alice\",\"exp\":NOW-3600}", .libjwt_accepts = true,
      .verdict = AUTH_EXPIRED },
    { .name = "exp exactly now-1", .cfg = CFG_HS256, .make = MAKE_LIBJWT, .alg = "HS256",
      .claims = "{\"sub\":\"alice\",\"exp\":NOW-1}", .verdict = AUTH_EXPIRED },
    { .name = "exp exactly now", .cfg = CFG_HS256, .make = MAKE_LIBJWT, .alg = "HS256",
      .claims = "{\"sub\":\"alice\",\"exp\":NOW}", .verdict = AUTH_EXPIRED },
    { .name = "exp 0", .cfg = CFG_HS256, .make = MAKE_LIBJWT, .alg = "HS256",
      .claims = "{\"sub\":\"alice\",\"exp\":0}", .verdict = AUTH_EXPIRED },
    { .name = "exp a real, rounded down", .cfg = CFG_HS256, .make = MAKE_LIBJWT, .alg = "HS256",
      .claims = "{\"sub\":\"alice\",\"exp\":NOW+3600.75}", .verdict = "OK", .user = "alice",
      .exp = "NOW+3600" },
    { .name = "exp a real half a second past", .cfg = CFG_HS256, .make = MAKE_LIBJWT,
      .alg = "HS256", .claims = "{\"sub\":\"alice\",\"exp\":NOW-1.5}",
      .verdict = AUTH_EXPIRED },
    { .name = "exp beyond int64 is clamped", .cfg = CFG_HS256, .make = MAKE_LIBJWT,
      .alg = "HS256", .claims = "{\"sub\":\"alice\",\"exp\":1e300}", .verdict = "OK",
      .user = "alice", .exp = "9223372036854775807" },
    { .name = "exp as string", .cfg = CFG_HS256, .make = MAKE_LIBJWT, .alg = "HS256",
      .claims = "{\"sub\":\"alice\",\"exp\":\"NOW+3600\"}", .libjwt_accepts = true,
      .verdict = AUTH_BAD_EXP },
    { .name = "exp null", .cfg = CFG_HS256, .make = MAKE_LIBJWT, .alg = "HS256",
      .claims = "{\"sub\":\"alice\",\"exp\":null}", .verdict = AUTH_BAD_EXP },
    { .name = "exp true", .cfg = CFG_HS256, .make = MAKE_LIBJWT, .alg = "HS256",
      .claims = "{\"sub\":\"alice\",\"exp\":true}", .verdict = AUTH_BAD_EXP },
    { .name = "nbf in the future", .cfg = CFG_HS256, .make = MAKE_LIBJWT, .alg = "HS256",
      .claims = "{\"sub\":\"alice\",\"nbf\":NOW+3600}", .libjwt_accepts = true,
      .verdict = AUTH_NOT_YET_VALID },
    { .name = "nbf exactly now", .cfg = CFG_HS256, .make = MAKE_LIBJWT, .alg = "HS256",
      .claims = "{\"sub\":\"alice\",\"nbf\":NOW,\"exp\":NOW+60}", .verdict = "OK",
      .user = "alice", .exp = "NOW+60" },
    { .name = "nbf in the past", .cfg = CFG_HS256, .make = MAKE_LIBJWT, .alg = "HS256",
      .claims = "{\"sub\":\"alice\",\"nbf\":NOW-60}", .verdict = "OK", .user = "alice",
      .exp = "0" },
    { .name = "nbf as string", .cfg = CFG_HS256, .make = MAKE_LIBJWT, .alg = "HS256",
      .claims = "{\"sub\":\"alice\",\"nbf\":\"NOW-60\"}", .verdict = AUTH_BAD_NBF },

    //  Shape, before libjwt
    { .name = "empty token", .cfg = CFG_HS256, .make = MAKE_RAW, .raw = "",
      .verdict = AUTH_EMPTY },
    { .name = "1 segment", .cfg = CFG_HS256, .make = MAKE_RAW,
      .raw = "eyJhbGciOiJIUzI1NiJ9", .verdict = AUTH_MALFORMED },
    { .name = "2 segments", .cfg = CFG_HS256, .make = MAKE_RAW,
      .raw = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0", .verdict = AUTH_MALFORMED },
    { .name = "4 segments", .cfg = CFG_HS256, .make = MAKE_RAW,
      .raw = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln.c2ln", .verdict = AUTH_MALFORMED },
    { .name = "only dots", .cfg = CFG_HS256, .make = MAKE_RAW, .raw = "..",
      .verdict = AUTH_MALFORMED },
    { .name = "empty header segment", .cfg = CFG_HS256, .make = MAKE_RAW,
      .raw = ".eyJzdWIiOiJhIn0.c2ln", .verdict = AUTH_MALFORMED },
    { .name = "empty payload segment", .cfg = CFG_HS256, .make = MAKE_RAW,
      .raw = "eyJhbGciOiJIUzI1NiJ9..c2ln", .verdict = AUTH_MALFORMED },
    { .name = "empty signature segment", .cfg = CFG_HS256, .make = MAKE_RAW,
      .raw = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.", .verdict = AUTH_MALFORMED },
    { .name = "base64 '+' and '/'", .cfg = CFG_HS256, .make = MAKE_RAW,
      .raw = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.ab+c/d", .verdict = AUTH_MALFORMED },
    { .name = "base64 padding", .cfg = CFG_HS256, .make = MAKE_RAW,
      .raw = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0=.c2ln", .verdict = AUTH_MALFORMED },
    { .name = "space inside", .cfg = CFG_HS256, .make = MAKE_RAW,
      .raw = "eyJhbGciOiJIUzI1NiJ9 .eyJzdWIiOiJhIn0.c2ln", .verdict = AUTH_MALFORMED },
    { .name = "non-ASCII byte", .cfg = CFG_HS256, .make = MAKE_RAW,
      .raw = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2l\xc3\xa9", .verdict = AUTH_MALFORMED },
    { .name = "signature of impossible length", .cfg = CFG_HS256, .make = MAKE_RAW,
      .raw = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnb", .verdict = AUTH_MALFORMED },
    { .name = "header of impossible length", .cfg = CFG_HS256, .make = MAKE_RAW,
      .raw = "eyJhbGciOiJIUzI1NiJ9a.eyJzdWIiOiJhIn0.c2ln", .verdict = AUTH_BAD_HEADER },
    { .name = "exactly RTWS_TOKEN_MAX bytes", .cfg = CFG_HS256, .make = MAKE_SIZED,
      .size = RTWS_TOKEN_MAX, .verdict = "OK", .user = "sized", .exp = "0" },
    { .name = "RTWS_TOKEN_MAX+1 bytes, validly signed", .cfg = CFG_HS256, .make = MAKE_SIZED,
      .size = RTWS_TOKEN_MAX + 1, .libjwt_accepts = true, .verdict = AUTH_TOO_LONG },
    { .name = "1 MB token", .cfg = CFG_HS256, .make = MAKE_FILLER, .size = 1024 * 1024,
      .verdict = AUTH_TOO_LONG },

    //  User id: sub, else user_id, else "anon"
    { .name = "sub number -> decimal", .cfg = CFG_HS256, .make = MAKE_LIBJWT, .alg = "HS256",
      .claims = "{\"sub\":42}", .verdict = "OK", .user = "42", .exp = "0" },
    { .name = "sub negative number", .cfg = CFG_HS256, .make = MAKE_LIBJWT, .alg = "HS256",
      .claims = "{\"sub\":-7}", .verdict = "OK", .user = "-7", .exp = "0" },
    { .name = "sub big number", .cfg = CFG_HS256, .make = MAKE_LIBJWT, .alg = "HS256",
      .claims = "{\"sub\":9007199254740993}", .verdict = "OK", .user = "9007199254740993",
      .exp = "0" },
    { .name = "sub integral real", .cfg = CFG_HS256, .make = MAKE_LIBJWT, .alg = "HS256",
      .claims = "{\"sub\":42.0}", .verdict = "OK", .user = "42", .exp = "0" },
    { .name = "sub fractional real -> user_id", .cfg = CFG_HS256, .make = MAKE_LIBJWT,
      .alg = "HS256", .claims = "{\"sub\":4.5,\"user_id\":\"bob\"}", .verdict = "OK",
      .user = "bob", .exp = "0" },
    { .name = "sub numeric string stays", .cfg = CFG_HS256, .make = MAKE_LIBJWT,
      .alg = "HS256", .claims = "{\"sub\":\"007\"}", .verdict = "OK", .user = "007",
      .exp = "0" },
    { .name = "sub empty -> user_id", .cfg = CFG_HS256, .make = MAKE_LIBJWT, .alg = "HS256",
      .claims = "{\"sub\":\"\",\"user_id\":\"bob\"}", .verdict = "OK", .user = "bob",
      .exp = "0" },
    { .name = "sub object -> user_id", .cfg = CFG_HS256, .make = MAKE_LIBJWT, .alg = "HS256",
      .claims = "{\"sub\":{\"id\":1},\"user_id\":\"bob\"}", .verdict = "OK", .user = "bob",
      .exp = "0" },
    { .name = "sub bool -> anon", .cfg = CFG_HS256, .make = MAKE_LIBJWT, .alg = "HS256",
      .claims = "{\"sub\":true}", .verdict = "OK", .user = "anon", .exp = "0" },
    { .name = "user_id fallback", .cfg = CFG_HS256, .make = MAKE_LIBJWT, .alg = "HS256",
      .claims = "{\"user_id\":\"bob\",\"exp\":NOW+60}", .verdict = "OK", .user = "bob",
      .exp = "NOW+60" },
    { .name = "user_id number", .cfg = CFG_HS256, .make = MAKE_LIBJWT, .alg = "HS256",
      .claims = "{\"user_id\":1234567890123}", .verdict = "OK", .user = "1234567890123",
      .exp = "0" },
    { .name = "no sub, no user_id -> anon", .cfg = CFG_HS256, .make = MAKE_LIBJWT,
      .alg = "HS256", .claims = "{\"exp\":NOW+60}", .verdict = "OK", .user = "anon",
      .exp = "NOW+60" },
    { .name = "sub of 304 bytes cut to 256", .cfg = CFG_HS256, .make = MAKE_LIBJWT,
      .alg = "HS256", .claims = "{\"sub\":\"" S256 S16 S16 S16 "\"}", .verdict = "OK",
      .user = S256, .exp = "0" },
    { .name = "cut never splits a 2-byte char", .cfg = CFG_HS256, .make = MAKE_LIBJWT,
      .alg = "HS256", .claims = "{\"sub\":\"" S254 "a\xc3\xa9z\"}", .verdict = "OK",
      .user = S254 "a", .exp = "0" },
    { .name = "cut keeps a char ending at 256", .cfg = CFG_HS256, .make = MAKE_LIBJWT,
      .alg = "HS256", .claims = "{\"sub\":\"" S254 "\xc3\xa9z\"}", .verdict = "OK",
      .user = S254 "\xc3\xa9", .exp = "0" },
    { .name = "cut never splits a 4-byte char", .cfg = CFG_HS256, .make = MAKE_LIBJWT,
      .alg = "HS256", .claims = "{\"sub\":\"" S254 "\xf0\x9f\x98\x80\"}", .verdict = "OK",
      .user = S254, .exp = "0" },
    { .name = "aud ignored when not configured", .cfg = CFG_HS256, .make = MAKE_LIBJWT,
      .alg = "HS256", .claims = "{\"sub\":\"alice\",\"aud\":\"other\"}", .verdict = "OK",
      .user = "alice", .exp = "0" },

    //  JWT_AUDIENCE
    { .name = "aud match", .cfg = CFG_HS256_AUD, .make = MAKE_LIBJWT, .alg = "HS256",
      .claims = "{\"sub\":\"alice\",\"aud\":\"" TEST_AUDIENCE "\"}", .verdict = "OK",
      .user = "alice", .exp = "0" },
    { .name = "aud mismatch", .cfg = CFG_HS256_AUD, .make = MAKE_LIBJWT, .alg = "HS256",
      .claims = "{\"sub\":\"alice\",\"aud\":\"other\"}", .libjwt_accepts = true,
      .verdict = AUTH_BAD_AUDIENCE },
    { .name = "aud differs in case", .cfg = CFG_HS256_AUD, .make = MAKE_LIBJWT,
      .alg = "HS256", .claims = "{\"sub\":\"alice\",\"aud\":\"RTWS-TEST\"}",
      .verdict = AUTH_BAD_AUDIENCE },
    { .name = "aud array holding it", .cfg = CFG_HS256_AUD, .make = MAKE_LIBJWT,
      .alg = "HS256", .claims = "{\"sub\":\"alice\",\"aud\":[\"other\",7,\"" TEST_AUDIENCE "\"]}",
      .verdict = "OK", .user = "alice", .exp = "0" },
    { .name = "aud array without it", .cfg = CFG_HS256_AUD, .make = MAKE_LIBJWT,
      .alg = "HS256", .claims = "{\"sub\":\"alice\",\"aud\":[\"other\",\"more\"]}",
      .verdict = AUTH_BAD_AUDIENCE },
    { .name = "aud empty array", .cfg = CFG_HS256_AUD, .make = MAKE_LIBJWT, .alg = "HS256",
      .claims = "{\"sub\":\"alice\",\"aud\":[]}", .verdict = AUTH_BAD_AUDIENCE },
    { .name = "aud missing", .cfg = CFG_HS256_AUD, .make = MAKE_LIBJWT, .alg = "HS256",
      .claims = "{\"sub\":\"alice\"}", .verdict = AUTH_BAD_AUDIENCE },
    { .name = "aud an object", .cfg = CFG_HS256_AUD, .make = MAKE_LIBJWT, .alg = "HS256",
      .claims = "{\"sub\":\"alice\",\"aud\":{\"" TEST_AUDIENCE "\":1}}",
      .verdict = AUTH_BAD_AUDIENCE },

    //  JWT_ISSUER
    { .name = "iss match", .cfg = CFG_HS256_ISS, .make = MAKE_LIBJWT, .alg = "HS256",
      .claims = "{\"sub\":\"alice\",\"iss\":\"" TEST_ISSUER "\"}", .verdict = "OK",
      .user = "alice", .exp = "0" },
    { .name = "iss mismatch", .cfg = CFG_HS256_ISS, .make = MAKE_LIBJWT, .alg = "HS256",
      .claims = "{\"sub\":\"alice\",\"iss\":\"https://evil.test\"}", .libjwt_accepts = true,
      .verdict = AUTH_BAD_ISSUER },
    { .name = "iss with a trailing slash", .cfg = CFG_HS256_ISS, .make = MAKE_LIBJWT,
      .alg = "HS256", .claims = "{\"sub\":\"alice\",\"iss\":\"" TEST_ISSUER "/\"}",
      .verdict = AUTH_BAD_ISSUER },
    { .name = "iss missing", .cfg = CFG_HS256_ISS, .make = MAKE_LIBJWT, .alg = "HS256",
      .claims = "{\"sub\":\"alice\"}", .verdict = AUTH_BAD_ISSUER },
    { .name = "iss an array", .cfg = CFG_HS256_ISS, .make = MAKE_LIBJWT, .alg = "HS256",
      .claims = "{\"sub\":\"alice\",\"iss\":[\"" TEST_ISSUER "\"]}", .verdict = AUTH_BAD_ISSUER },

    //  Other HMAC sizes
    { .name = "good HS384", .cfg = CFG_HS384, .make = MAKE_LIBJWT, .alg = "HS384",
      .claims = ALICE, .verdict = "OK", .user = "alice", .exp = "NOW+3600" },
    { .name = "HS256 token while JWT_ALG=HS384", .cfg = CFG_HS384, .make = MAKE_LIBJWT,
      .alg = "HS256", .claims = ALICE, .libjwt_accepts = true, .verdict = AUTH_ALG_MISMATCH },
    { .name = "good HS512", .cfg = CFG_HS512, .make = MAKE_LIBJWT, .alg = "HS512",
      .claims = ALICE, .verdict = "OK", .user = "alice", .exp = "NOW+3600" },
    { .name = "HS384 token while JWT_ALG=HS512", .cfg = CFG_HS512, .make = MAKE_LIBJWT,
      .alg = "HS384", .claims = ALICE, .libjwt_accepts = true, .verdict = AUTH_ALG_MISMATCH },

    //  RS256 with a real key pair
    { .name = "good RS256", .cfg = CFG_RS256, .make = MAKE_LIBJWT, .alg = "RS256",
      .key = KEY_RS_PRIVATE, .claims = ALICE, .verdict = "OK", .user = "alice",
      .exp = "NOW+3600" },
    { .name = "RS256 signed with the wrong key", .cfg = CFG_RS256, .make = MAKE_LIBJWT,
      .alg = "RS256", .key = KEY_RS_WRONG_PRIVATE, .claims = ALICE,
      .verdict = AUTH_BAD_SIGNATURE },
    { .name = "RS256 payload swapped", .cfg = CFG_RS256, .make = MAKE_TAMPER, .alg = "RS256",
      .key = KEY_RS_PRIVATE, .claims = ALICE, .raw = "{\"sub\":\"admin\"}",
      .verdict = AUTH_BAD_SIGNATURE },
    { .name = "alg confusion: HS256 keyed with the RSA PEM", .cfg = CFG_RS256,
      .make = MAKE_LIBJWT, .alg = "HS256", .key = KEY_RS_PUBLIC, .claims = ALICE,
      .libjwt_accepts = true, .verdict = AUTH_ALG_MISMATCH },
    { .name = "ES256 token while JWT_ALG=RS256", .cfg = CFG_RS256, .make = MAKE_LIBJWT,
      .alg = "ES256", .key = KEY_ES_PRIVATE, .claims = ALICE, .verdict = AUTH_ALG_MISMATCH },
    { .name = "RS256 expired", .cfg = CFG_RS256, .make = MAKE_LIBJWT, .alg = "RS256",
      .key = KEY_RS_PRIVATE, .claims = "{\"sub\":\"alice\",\"exp\":NOW-1}",
      .libjwt_accepts = true, .verdict = AUTH_EXPIRED },

    //  ES256 with a real key pair
    { .name = "good ES256", .cfg = CFG_ES256, .make = MAKE_LIBJWT, .alg = "ES256",
      .key = KEY_ES_PRIVATE, .claims = ALICE, .verdict = "OK", .user = "alice",
      .exp = "NOW+3600" },
    { .name = "ES256 payload swapped", .cfg = CFG_ES256, .make = MAKE_TAMPER, .alg = "ES256",
      .key = KEY_ES_PRIVATE, .claims = ALICE, .raw = "{\"sub\":\"admin\"}",
      .verdict = AUTH_BAD_SIGNATURE },
    { .name = "alg confusion: HS256 keyed with the EC PEM", .cfg = CFG_ES256,
      .make = MAKE_LIBJWT, .alg = "HS256", .key = KEY_ES_PUBLIC, .claims = ALICE,
      .libjwt_accepts = true, .verdict = AUTH_ALG_MISMATCH },
    { .name = "RS256 token while JWT_ALG=ES256", .cfg = CFG_ES256, .make = MAKE_LIBJWT,
      .alg = "RS256", .key = KEY_RS_PRIVATE, .claims = ALICE, .verdict = AUTH_ALG_MISMATCH },
};

//  PEM files, read once
typedef struct {
    char *pem [KEY_COUNT];
} test_keys_t;

//  Everything one running actor needs
typedef struct {
    rtws_config_t *config;
    zactor_t *actor;
    zsock_t *dealer;            //  the test playing the gateway
} test_env_t;

static char *
s_test_slurp (const char *dir, const char *name)
{
    char *path = zsys_sprintf ("%s/%s", dir, name);
    assert (path);
    FILE *file = fopen (path, "rb");
    char *text = NULL;
    if (file) {
        text = (char *) zmalloc (65536);
        assert (text);
        size_t size = fread (text, 1, 65535, file);
        fclose (file);
        if (size == 0)
            zstr_free (&text);
    }
    if (!text)
        fprintf (stderr, "auth_test: cannot read %s (set RTWS_FIXTURES)\n", path);
    zstr_free (&path);
    return text;
}

static void
s_test_set (char **field, const char *value)
{
    free (*field);
    *field = value? strdup (value): NULL;
}

static rtws_config_t *
s_test_config (test_cfg_t cfg, const test_keys_t *keys)
{
    static const char *algs [] = { "HS256", "HS384", "HS512", "HS256", "HS256", "RS256", "ES256" };
    rtws_config_t *config = rtws_config_new ();
    assert (config);
    s_test_set (&config->jwt_alg, algs [cfg]);
    s_test_set (&config->jwt_secret, TEST_SECRET);
    const char *pem = cfg == CFG_RS256? keys->pem [KEY_RS_PUBLIC]:
                      cfg == CFG_ES256? keys->pem [KEY_ES_PUBLIC]: NULL;
    s_test_set (&config->jwt_public_key, pem);
    config->jwt_public_key_len = pem? strlen (pem): 0;
    s_test_set (&config->jwt_audience, cfg == CFG_HS256_AUD? TEST_AUDIENCE: NULL);
    s_test_set (&config->jwt_issuer, cfg == CFG_HS256_ISS? TEST_ISSUER: NULL);
    return config;
}

static void
s_test_start (test_env_t *env, rtws_config_t *config)
{
    env->config = config;
    env->actor = zactor_new (auth_actor, config);
    assert (env->actor);
    env->dealer = zsock_new_dealer (">" RTWS_EP_AUTH);
    assert (env->dealer);
    zsock_set_rcvtimeo (env->dealer, TEST_TIMEOUT);
}

static void
s_test_stop (test_env_t *env)
{
    zsock_destroy (&env->dealer);
    zactor_destroy (&env->actor);       //  the config must outlive the actor
    rtws_config_destroy (&env->config);
}

//  Replaces NOW, NOW+n and NOW-n by Unix times; caller frees.

static char *
s_test_expand (const char *text, int64_t now)
{
    char *out = (char *) zmalloc (strlen (text) * 7 + 1);
    assert (out);
    char *end = out;
    while (*text) {
        if (strncmp (text, "NOW", 3) == 0) {
            text += 3;
            int64_t value = now;
            if (*text == '+' || *text == '-') {
                char *rest;
                value += strtoll (text, &rest, 10);
                text = rest;
            }
            end += sprintf (end, "%" PRId64, value);
        }
        else
            *end++ = *text++;
    }
    *end = 0;
    return out;
}

static char *
s_test_b64url (const void *data, size_t size)
{
    static const char alphabet [] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const unsigned char *bytes = (const unsigned char *) data;
    char *out = (char *) zmalloc (size / 3 * 4 + 5);
    assert (out);
    size_t n = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < size; i++) {
        acc = (acc << 8) | bytes [i];
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            out [n++] = alphabet [(acc >> bits) & 63];
        }
        acc &= (1u << bits) - 1;
    }
    if (bits > 0)
        out [n++] = alphabet [(acc << (6 - bits)) & 63];
    out [n] = 0;
    return out;
}

//  header.claims.signature, the signature an HMAC with TEST_SECRET when alg
//  is given, else the literal signature text.

static char *
s_test_craft (const char *header, const char *claims, const char *alg, const char *signature)
{
    char *header64 = s_test_b64url (header, strlen (header));
    char *claims64 = s_test_b64url (claims, strlen (claims));
    char *input = zsys_sprintf ("%s.%s", header64, claims64);
    char *sig64 = NULL;
    if (alg) {
        const EVP_MD *md = strcmp (alg, "HS256") == 0? EVP_sha256 ():
                           strcmp (alg, "HS384") == 0? EVP_sha384 (): EVP_sha512 ();
        unsigned char mac [EVP_MAX_MD_SIZE];
        unsigned int mac_len = 0;
        HMAC (md, TEST_SECRET, (int) strlen (TEST_SECRET),
              (const unsigned char *) input, strlen (input), mac, &mac_len);
        sig64 = s_test_b64url (mac, mac_len);
    }
    char *token = zsys_sprintf ("%s.%s", input, sig64? sig64: signature);
    zstr_free (&header64);
    zstr_free (&claims64);
    zstr_free (&input);
    zstr_free (&sig64);
    return token;
}

static char *
s_test_mint (const char *alg, const char *key, const char *claims)
{
    jwt_t *jwt = NULL;
    char *token = NULL;
    if (jwt_new (&jwt) == 0
    &&  jwt_add_grants_json (jwt, claims) == 0
    &&  jwt_set_alg (jwt, jwt_str_alg (alg), (const unsigned char *) key, (int) strlen (key)) == 0)
        token = jwt_encode_str (jwt);
    jwt_free (jwt);
    return token;
}

//  A validly signed HS256 token of exactly size bytes: spaces in the header
//  and a pad claim fill it, since base64url cannot make every length alone.

static char *
s_test_sized (size_t size)
{
    for (size_t spaces = 0; spaces < 3; spaces++)
        for (size_t pad = 0; pad < size; pad++) {
            size_t header_len = strlen (HS256_HEADER) + spaces;
            size_t claims_len = strlen ("{\"sub\":\"sized\",\"pad\":\"\"}") + pad;
            size_t length = (header_len * 4 + 2) / 3 + 1 + (claims_len * 4 + 2) / 3 + 1 + 43;
            if (length != size)
                continue;
            char *filler = (char *) zmalloc (pad + 1);
            assert (filler);
            memset (filler, 'x', pad);
            char *header = zsys_sprintf ("{\"alg\":\"HS256\",\"typ\":\"JWT\"%*s}", (int) spaces, "");
            char *claims = zsys_sprintf ("{\"sub\":\"sized\",\"pad\":\"%s\"}", filler);
            char *token = s_test_craft (header, claims, "HS256", NULL);
            zstr_free (&filler);
            zstr_free (&header);
            zstr_free (&claims);
            assert (strlen (token) == size);
            return token;
        }
    return NULL;
}

static char *
s_test_token (const test_row_t *row, const test_keys_t *keys, int64_t now)
{
    const char *key = row->key == KEY_SECRET? TEST_SECRET:
                      row->key == KEY_WRONG_SECRET? "wrong-secret": keys->pem [row->key];
    char *claims = row->claims? s_test_expand (row->claims, now): NULL;
    char *token = NULL;
    switch (row->make) {
        case MAKE_RAW:
            token = strdup (row->raw);
            break;
        case MAKE_LIBJWT:
            token = s_test_mint (row->alg, key, claims);
            break;
        case MAKE_TAMPER: {
            char *good = s_test_mint (row->alg, key, claims);
            char *forged = s_test_expand (row->raw, now);
            char *forged64 = s_test_b64url (forged, strlen (forged));
            char *first = strchr (good, '.');
            char *last = strrchr (good, '.');
            token = zsys_sprintf ("%.*s.%s%s", (int) (first - good), good, forged64, last);
            free (good);
            zstr_free (&forged);
            zstr_free (&forged64);
            break;
        }
        case MAKE_HMAC:
            token = s_test_craft (row->header, claims, row->alg, NULL);
            break;
        case MAKE_UNSIGNED:
            token = s_test_craft (row->header, claims, NULL, row->raw);
            break;
        case MAKE_SIZED:
            token = s_test_sized (row->size);
            break;
        case MAKE_FILLER:
            token = (char *) zmalloc (row->size + 1);
            assert (token);
            memset (token, 'A', row->size);
            break;
    }
    zstr_free (&claims);
    return token;
}

//  True when bare libjwt, given the configured key, accepts the token.

static bool
s_test_libjwt_accepts (const rtws_config_t *config, const char *token)
{
    bool hmac = config->jwt_alg [0] == 'H';
    const char *key = hmac? config->jwt_secret: config->jwt_public_key;
    jwt_t *jwt = NULL;
    int rc = jwt_decode (&jwt, token, (const unsigned char *) key, (int) strlen (key));
    jwt_free (jwt);
    return rc == 0;
}

//  Receives one reply and checks it; returns the number of failures.

static int
s_test_reply (zsock_t *dealer, const char *name, uint64_t seq, const char *want_verdict,
              const char *want_user, uint64_t want_exp, bool verbose)
{
    char *verdict = NULL, *text = NULL;
    uint64_t reply_seq = 0, exp = 0;
    if (zsock_recv (dealer, "s8s8", &verdict, &reply_seq, &text, &exp) == -1) {
        fprintf (stderr, "auth_test: %s: no reply within %d ms\n", name, TEST_TIMEOUT);
        return 1;
    }
    bool want_ok = strcmp (want_verdict, "OK") == 0;
    bool pass = verdict && text && reply_seq == seq
             && strcmp (verdict, want_ok? "OK": "FAIL") == 0
             && strcmp (text, want_ok? want_user: want_verdict) == 0
             && exp == (want_ok? want_exp: 0);
    if (!pass)
        fprintf (stderr, "auth_test: %s: want %s '%s' exp %" PRIu64 " seq %" PRIu64
                 ", got %s '%s' exp %" PRIu64 " seq %" PRIu64 "\n", name,
                 want_ok? "OK": "FAIL", want_ok? want_user: want_verdict, want_exp, seq,
                 verdict? verdict: "-", text? text: "-", exp, reply_seq);
    else
    if (verbose)
        printf ("   %-45s %s %.40s\n", name, verdict, text);
    zstr_free (&verdict);
    zstr_free (&text);
    return pass? 0: 1;
}

//  Sends one VERIFY of token_size bytes and checks the reply.

static int
s_test_ask (zsock_t *dealer, const char *name, uint64_t seq, const char *token,
            size_t token_size, const char *want_verdict, const char *want_user,
            uint64_t want_exp, bool verbose)
{
    zsock_send (dealer, "s8b", "VERIFY", seq, token, token_size);
    return s_test_reply (dealer, name, seq, want_verdict, want_user, want_exp, verbose);
}

//  Runs auth_actor on this thread with a configuration it must refuse: it
//  must answer READY with 0 (not 1) and never bind RTWS_EP_AUTH. Returns
//  failures.

static int
s_test_refused (const char *name, rtws_config_t *config, bool verbose)
{
    zsock_t *backend = NULL;
    zsock_t *frontend = zsys_create_pipe (&backend);
    assert (frontend);
    //  Queued before the actor runs on this thread: READY, then $TERM so
    //  it returns whatever it decided.
    zstr_send (frontend, "READY");
    zstr_send (frontend, "$TERM");
    auth_actor (backend, config);
    zsock_set_rcvtimeo (frontend, 0);
    int started = zsock_wait (frontend);
    int ready = -1;
    if (zsock_recv (frontend, "i", &ready) != 0)
        ready = -1;
    zsock_t *probe = zsock_new (ZMQ_ROUTER);
    assert (probe);
    int bound = zsock_bind (probe, "%s", RTWS_EP_AUTH);
    int failures = 0;
    if (started != 0 || ready != 0 || bound == -1) {
        fprintf (stderr, "auth_test: %s: signal %d, READY %d, endpoint %s\n", name,
                 started, ready, bound == -1 ? "bound" : "free");
        failures++;
    }
    else
    if (verbose)
        printf ("   %-45s refused\n", name);
    if (bound != -1)
        zsock_unbind (probe, "%s", RTWS_EP_AUTH);
    zsock_destroy (&probe);
    zsock_destroy (&frontend);
    zsock_destroy (&backend);
    rtws_config_destroy (&config);
    return failures;
}

int
auth_test (bool verbose)
{
    printf (" * auth: ");
    if (verbose) {
        printf ("\n");
        rtws_log_set_level (RTWS_LOG_DEBUG);
    }
    const char *dir = getenv ("RTWS_FIXTURES");
    if (!dir || !*dir)
        dir = "tests/fixtures";
    test_keys_t keys = { { NULL } };
    int failures = 0;
    for (int key = 0; key < KEY_COUNT; key++)
        if (s_key_files [key] && !(keys.pem [key] = s_test_slurp (dir, s_key_files [key])))
            failures++;
    if (failures) {
        for (int key = 0; key < KEY_COUNT; key++)
            zstr_free (&keys.pem [key]);
        printf ("FAILED (fixtures missing)\n");
        return failures;
    }

    //  @selftest
    //  The table, one actor per configuration
    test_env_t env = { NULL, NULL, NULL };
    int current = -1;
    size_t rows = sizeof s_rows / sizeof s_rows [0];
    for (size_t index = 0; index < rows; index++) {
        const test_row_t *row = &s_rows [index];
        if ((int) row->cfg != current) {
            s_test_stop (&env);
            s_test_start (&env, s_test_config (row->cfg, &keys));
            current = (int) row->cfg;
        }
        int64_t now = (int64_t) time (NULL);
        char *token = s_test_token (row, &keys, now);
        if (!token) {
            fprintf (stderr, "auth_test: %s: cannot make the token\n", row->name);
            failures++;
            continue;
        }
        //  A row guarding a libjwt hole is only worth something while the hole is there
        if (row->libjwt_accepts && !s_test_libjwt_accepts (env.config, token)) {
            fprintf (stderr, "auth_test: %s: libjwt alone already refuses this token\n",
                     row->name);
            failures++;
        }
        uint64_t want_exp = 0;
        if (row->exp) {
            char *exp = s_test_expand (row->exp, now);
            want_exp = strtoull (exp, NULL, 10);
            zstr_free (&exp);
        }
        failures += s_test_ask (env.dealer, row->name, 1000 + index, token, strlen (token),
                                row->verdict, row->user, want_exp, verbose);
        free (token);
    }
    s_test_stop (&env);

    //  Beyond the table: the frame is data, not a C string; replies follow
    //  their requests; two gateways each get their own answers.
    s_test_start (&env, s_test_config (CFG_HS256, &keys));
    char *good = s_test_mint ("HS256", TEST_SECRET, "{\"sub\":\"alice\"}");
    assert (good);
    char *nul = strdup (good);
    nul [strlen (nul) / 2] = 0;
    failures += s_test_ask (env.dealer, "NUL byte inside the frame", 1, nul, strlen (good),
                            AUTH_MALFORMED, NULL, 0, verbose);
    free (nul);

    for (uint64_t seq = 10; seq < 13; seq++)
        zsock_send (env.dealer, "s8s", "VERIFY", seq, seq == 11? "x.y.z": good);
    for (uint64_t seq = 10; seq < 13; seq++)
        failures += s_test_reply (env.dealer, "pipelined requests answered in order", seq,
                                  seq == 11? AUTH_MALFORMED: "OK", "alice", 0, verbose);

    zsock_t *other = zsock_new_dealer (">" RTWS_EP_AUTH);
    assert (other);
    zsock_set_rcvtimeo (other, TEST_TIMEOUT);
    zsock_send (other, "s8s", "VERIFY", (uint64_t) 77, "x.y.z");
    zsock_send (env.dealer, "s8s", "VERIFY", (uint64_t) 88, good);
    failures += s_test_reply (env.dealer, "first gateway gets its own reply", 88,
                              "OK", "alice", 0, verbose);
    failures += s_test_reply (other, "second gateway gets its own reply", 77,
                              AUTH_MALFORMED, NULL, 0, verbose);
    zsock_destroy (&other);
    free (good);
    s_test_stop (&env);

    //  Configurations auth must refuse to start with
    rtws_config_t *config = s_test_config (CFG_HS256, &keys);
    s_test_set (&config->jwt_alg, "PS256");
    failures += s_test_refused ("JWT_ALG=PS256 (not in libjwt 1.10)", config, verbose);
    config = s_test_config (CFG_HS256, &keys);
    s_test_set (&config->jwt_alg, "none");
    failures += s_test_refused ("JWT_ALG=none", config, verbose);
    config = s_test_config (CFG_HS256, &keys);
    s_test_set (&config->jwt_secret, "");
    failures += s_test_refused ("empty JWT_SECRET", config, verbose);
    config = s_test_config (CFG_RS256, &keys);
    s_test_set (&config->jwt_public_key, NULL);
    config->jwt_public_key_len = 0;
    failures += s_test_refused ("RS256 without a public key", config, verbose);
    config = s_test_config (CFG_RS256, &keys);
    s_test_set (&config->jwt_public_key, "-----BEGIN PUBLIC KEY-----\nnot a key\n"
                                         "-----END PUBLIC KEY-----\n");
    config->jwt_public_key_len = strlen (config->jwt_public_key);
    failures += s_test_refused ("RS256 with a garbage PEM", config, verbose);
    config = s_test_config (CFG_RS256, &keys);
    s_test_set (&config->jwt_public_key, keys.pem [KEY_ES_PUBLIC]);
    config->jwt_public_key_len = strlen (config->jwt_public_key);
    failures += s_test_refused ("RS256 with an EC key", config, verbose);
    config = s_test_config (CFG_ES256, &keys);
    s_test_set (&config->jwt_public_key, keys.pem [KEY_RS_PUBLIC]);
    config->jwt_public_key_len = strlen (config->jwt_public_key);
    failures += s_test_refused ("ES256 with an RSA key", config, verbose);
    //  @end

    for (int key = 0; key < KEY_COUNT; key++)
        zstr_free (&keys.pem [key]);
    printf ("%s (%zu table rows)\n", failures? "FAILED": "OK", rows);
    return failures;
}
