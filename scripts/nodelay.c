/*
 * nodelay.so: an LD_PRELOAD shim that sets TCP_NODELAY on every accepted TCP
 * socket.
 *
 * Garage (and other servers) leave Nagle's algorithm on for accepted
 * connections. A response written as a header and then a body makes the second
 * segment wait for the client's delayed ACK: about 40 ms per GET on loopback.
 * Wrapping accept() and accept4() fixes that without patching the server.
 *
 * Build: gcc -shared -fPIC -O2 -o nodelay.so nodelay.c -ldl
 * Use:   LD_PRELOAD=/path/to/nodelay.so garage -c garage.toml server
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <sys/socket.h>

typedef int (*accept_fn)(int, struct sockaddr *, socklen_t *);
typedef int (*accept4_fn)(int, struct sockaddr *, socklen_t *, int);

/* Turn Nagle off on fd when it is a TCP socket; errno is left untouched. */
static void set_nodelay(int fd)
{
    int saved_errno = errno;
    int proto = 0;
    socklen_t len = sizeof proto;
    if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &len) == 0 && proto == IPPROTO_TCP) {
        int one = 1;
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    errno = saved_errno;
}

int accept(int sockfd, struct sockaddr *addr, socklen_t *addrlen)
{
    static accept_fn real_accept = NULL;
    if (real_accept == NULL) {
        real_accept = (accept_fn)dlsym(RTLD_NEXT, "accept");
        if (real_accept == NULL) {
            errno = ENOSYS;
            return -1;
        }
    }
    int fd = real_accept(sockfd, addr, addrlen);
    if (fd >= 0)
        set_nodelay(fd);
    return fd;
}

int accept4(int sockfd, struct sockaddr *addr, socklen_t *addrlen, int flags)
{
    static accept4_fn real_accept4 = NULL;
    if (real_accept4 == NULL) {
        real_accept4 = (accept4_fn)dlsym(RTLD_NEXT, "accept4");
        if (real_accept4 == NULL) {
            errno = ENOSYS;
            return -1;
        }
    }
    int fd = real_accept4(sockfd, addr, addrlen, flags);
    if (fd >= 0)
        set_nodelay(fd);
    return fd;
}
