/*
 * epoll_echo: the benchmark's C anchor, a single-threaded echo server in the classic epoll shape, written for
 * echosrv's benchmark (bench/run.ts builds it with cc when a compiler is present). It is what a careful C
 * programmer would write for the same job as echosrv's default copy, so its numbers are the bar Deno is held to:
 *   - one thread, level-triggered epoll, non-blocking sockets, TCP_NODELAY on accepted sockets (as echosrv does);
 *   - one shared 64 KiB read buffer: an idle connection costs no user memory at all, only its fd and kernel state;
 *   - backpressure like echosrv's: when a write is partial, the rest is kept (malloc'd for that connection only),
 *     the connection stops being read (EPOLLOUT instead of EPOLLIN) until the rest is written;
 *   - at the peer's end of stream (read returns 0) everything read has been written, so the socket is closed.
 *
 * Usage: epoll_echo [port [host]]   (defaults: 0 = pick a free port, 127.0.0.1)
 * Prints "listening on port N" on standard output once listening; runs until killed (SIGTERM/SIGINT).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define READ_BUFFER (64 * 1024)
#define MAX_EVENTS 256

/* Bytes read but not yet written back, for the few connections whose last write was partial; indexed by fd. */
struct pending {
  char *data;
  size_t length;
  size_t offset;
};

static struct pending **pending_by_fd;
static size_t pending_slots;
static int epfd;
static char buffer[READ_BUFFER];

static void die(const char *what) {
  perror(what);
  exit(1);
}

static void close_conn(int fd) {
  if ((size_t)fd < pending_slots && pending_by_fd[fd]) {
    free(pending_by_fd[fd]->data);
    free(pending_by_fd[fd]);
    pending_by_fd[fd] = NULL;
  }
  close(fd); /* closing also removes it from the epoll set */
}

static void watch(int fd, uint32_t events, int op) {
  struct epoll_event ev = {.events = events, .data.fd = fd};
  if (epoll_ctl(epfd, op, fd, &ev) < 0) die("epoll_ctl");
}

/* Keeps data[offset..length) for later and switches the connection from reading to waiting for write space. */
static void keep_rest(int fd, const char *data, size_t length) {
  struct pending *p = malloc(sizeof *p);
  if (!p || !(p->data = malloc(length))) die("malloc");
  memcpy(p->data, data, length);
  p->length = length;
  p->offset = 0;
  pending_by_fd[fd] = p;
  watch(fd, EPOLLOUT, EPOLL_CTL_MOD);
}

static void on_readable(int fd) {
  ssize_t n = read(fd, buffer, sizeof buffer);
  if (n == 0) {
    close_conn(fd);
    return;
  }
  if (n < 0) {
    if (errno != EAGAIN && errno != EINTR) close_conn(fd);
    return;
  }
  ssize_t w = write(fd, buffer, (size_t)n);
  if (w < 0) {
    if (errno != EAGAIN) {
      close_conn(fd);
      return;
    }
    w = 0;
  }
  if (w < n) keep_rest(fd, buffer + w, (size_t)(n - w));
}

static void on_writable(int fd) {
  struct pending *p = pending_by_fd[fd];
  ssize_t w = write(fd, p->data + p->offset, p->length - p->offset);
  if (w < 0) {
    if (errno != EAGAIN) close_conn(fd);
    return;
  }
  p->offset += (size_t)w;
  if (p->offset == p->length) {
    free(p->data);
    free(p);
    pending_by_fd[fd] = NULL;
    watch(fd, EPOLLIN, EPOLL_CTL_MOD);
  }
}

static void on_acceptable(int listener) {
  for (;;) {
    int fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return; /* EAGAIN, or EMFILE and the like: try again on the next event */
    if ((size_t)fd >= pending_slots) {
      close(fd);
      continue;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    watch(fd, EPOLLIN, EPOLL_CTL_ADD);
  }
}

int main(int argc, char **argv) {
  int port = argc > 1 ? atoi(argv[1]) : 0;
  const char *host = argc > 2 ? argv[2] : "127.0.0.1";
  signal(SIGPIPE, SIG_IGN);

  /* As many connections as the hard limit allows (the memory measurement opens thousands). */
  struct rlimit lim;
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0) {
    lim.rlim_cur = lim.rlim_max;
    setrlimit(RLIMIT_NOFILE, &lim);
  }
  getrlimit(RLIMIT_NOFILE, &lim);
  pending_slots = lim.rlim_cur > 1000000 ? 1000000 : lim.rlim_cur;
  pending_by_fd = calloc(pending_slots, sizeof *pending_by_fd);
  if (!pending_by_fd) die("calloc");

  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
    fprintf(stderr, "epoll_echo: %s is not an IPv4 address\n", host);
    return 2;
  }
  int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (listener < 0) die("socket");
  int one = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind");
  if (listen(listener, 4096) < 0) die("listen");
  socklen_t len = sizeof addr;
  getsockname(listener, (struct sockaddr *)&addr, &len);
  printf("listening on port %d\n", ntohs(addr.sin_port));
  fflush(stdout);

  epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) die("epoll_create1");
  watch(listener, EPOLLIN, EPOLL_CTL_ADD);
  struct epoll_event events[MAX_EVENTS];
  for (;;) {
    int ready = epoll_wait(epfd, events, MAX_EVENTS, -1);
    if (ready < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait");
    }
    for (int i = 0; i < ready; i++) {
      int fd = events[i].data.fd;
      if (fd == listener) {
        on_acceptable(listener);
      } else if (events[i].events & EPOLLOUT) {
        on_writable(fd);
      } else {
        on_readable(fd); /* EPOLLIN, and EPOLLHUP/EPOLLERR, which read() then reports */
      }
    }
  }
}
