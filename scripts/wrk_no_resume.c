/*
 * LD_PRELOAD shim for wrk in the benchmark's TLS phase: wrk never resumes a
 * TLS session, so every connection it opens is a full handshake.
 *
 * wrk reuses one SSL object per connection slot: on a reconnect it calls
 * SSL_shutdown() and SSL_clear(), and SSL_clear() after a clean shutdown
 * keeps the last session, which the next SSL_connect() offers for
 * resumption (a TLS 1.3 PSK or a TLS 1.2 ticket / session id). Against a
 * server that issues session tickets, most of wrk's `Connection: close`
 * connections are then resumptions, not the full handshakes the figure is
 * about. This shim drops the session before wrk's SSL_clear(); nothing else
 * on the wire changes (close_notify is still sent).
 *
 * Built by scripts/bench.py at the start of the TLS phase:
 *   cc -O2 -shared -fPIC -o wrk_no_resume.so scripts/wrk_no_resume.c -ldl
 * No OpenSSL headers needed: both functions are looked up in the libssl that
 * wrk is linked with.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>

typedef struct ssl_st SSL;
typedef struct ssl_session_st SSL_SESSION;

int SSL_clear(SSL *s)
{
    static int (*real_clear)(SSL *);
    static int (*set_session)(SSL *, SSL_SESSION *);

    if (real_clear == NULL) {
        real_clear = (int (*)(SSL *))dlsym(RTLD_NEXT, "SSL_clear");
        set_session = (int (*)(SSL *, SSL_SESSION *))dlsym(RTLD_NEXT, "SSL_set_session");
    }
    if (set_session != NULL)
        set_session(s, NULL); /* forget the session: the next handshake is a full one */
    return real_clear != NULL ? real_clear(s) : 0;
}
