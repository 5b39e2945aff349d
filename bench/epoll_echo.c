/*
 * epoll_echo: the benchmark's C anchor, a single-threaded echo server in the classic epoll shape, written for
 * echosrv's benchmark (bench/run.ts builds it with cc when a compiler is present). It is what a careful C
 * programmer would write for the same job as echosrv's default copy, so its numbers are the bar Deno is held to:
 *   - one thread, edge-triggered epoll (each socket registered once, for both directions: no epoll_ctl per
 *     event), non-blocking sockets, TCP_NODELAY on accepted sockets (as echosrv does);
 *   - one 64 KiB read buffer shared by all connections: an idle connection costs no user memory, only its fd
 *     and kernel state; a short read means the socket is drained (no extra read to see EAGAIN);
 *   - backpressure like echosrv's: when a write cannot finish, the connection keeps the buffer it was read into
 *     (no copy; reading goes on with another from a free list) and is not read again until the rest is written;
 *   - at the peer's end of stream (read returns 0) everything read has been written, so the socket is closed.
 *
 * With THREADS above 1 it is the multi-core baseline of `--workers` scaling, in the shape nginx and HAProxy use:
 * THREADS threads, each the loop above with its own listener on the same port (SO_REUSEPORT: the kernel spreads new
 * connections over the listeners) and its own epoll set and buffers; a connection stays on the thread that accepted
 * it, as in echosrv's workers.
 *
 * Usage: epoll_echo [port [host [threads]]]   (defaults: 0 = pick a free port, 127.0.0.1, 1 thread)
 * Prints "listening on port N" on standard output once listening; runs until killed (SIGTERM/SIGINT).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define READ_BUFFER (64 * 1024)
#define MAX_EVENTS 256

/*
 * Bytes read but not yet written back, for the few connections whose last write was partial; indexed by fd. The
 * read buffer itself is handed to the connection (no copy) and a fresh one is taken for the next read; buffers come
 * back to a free list when their bytes are written.
 */
struct pending {
  char *data;
  size_t length;
  size_t offset;
  /* The peer has half-closed (EPOLLRDHUP seen): read on to the end of stream even after a short read. */
  int peer_done;
};

/* Shared by the threads: a file descriptor belongs to one thread at a time, so each touches only its own slots. */
static struct pending *pending_by_fd;
static size_t fd_slots;
/* Each thread's own epoll set, read buffer and free list. */
static __thread int epfd;
static __thread char *read_buffer;
static __thread char **free_buffers;
static __thread size_t free_count, free_capacity;

static void die(const char *what) {
  perror(what);
  exit(1);
}

static char *take_buffer(void) {
  if (free_count > 0) return free_buffers[--free_count];
  char *b = malloc(READ_BUFFER);
  if (!b) die("malloc");
  return b;
}

static void give_back(char *b) {
  if (free_count == free_capacity) {
    free_capacity = free_capacity ? free_capacity * 2 : 16;
    free_buffers = realloc(free_buffers, free_capacity * sizeof *free_buffers);
    if (!free_buffers) die("realloc");
  }
  free_buffers[free_count++] = b;
}

static void close_conn(int fd) {
  if (pending_by_fd[fd].data) give_back(pending_by_fd[fd].data);
  pending_by_fd[fd].data = NULL;
  pending_by_fd[fd].peer_done = 0;
  close(fd); /* closing also removes it from the epoll set */
}

/* Writes what a connection still owes; returns 1 when all is written, 0 when the socket is full, -1 when closed. */
static int flush(int fd) {
  struct pending *p = &pending_by_fd[fd];
  while (p->offset < p->length) {
    ssize_t w = write(fd, p->data + p->offset, p->length - p->offset);
    if (w < 0) {
      if (errno == EAGAIN) return 0;
      if (errno == EINTR) continue;
      close_conn(fd);
      return -1;
    }
    p->offset += (size_t)w;
  }
  give_back(p->data);
  p->data = NULL;
  return 1;
}

/*
 * Edge-triggered: read until the socket is drained (a short read means it is), writing each chunk back. When a
 * write cannot finish, the connection keeps that buffer and stops reading until the socket can take the rest (the
 * EPOLLOUT edge), which is echosrv's backpressure too.
 */
static void on_event(int fd, uint32_t events) {
  if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) pending_by_fd[fd].peer_done = 1;
  if (pending_by_fd[fd].data) {
    if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
    if (flush(fd) != 1) return;
  }
  for (;;) {
    ssize_t n = read(fd, read_buffer, READ_BUFFER);
    if (n == 0) {
      close_conn(fd);
      return;
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN) close_conn(fd);
      return;
    }
    struct pending *p = &pending_by_fd[fd];
    p->data = read_buffer;
    p->length = (size_t)n;
    p->offset = 0;
    read_buffer = take_buffer(); /* the connection owns the bytes until they are written */
    int flushed = flush(fd);
    if (flushed != 1) return;
    if (n < READ_BUFFER && !pending_by_fd[fd].peer_done) return; /* drained; a later edge says when there is more */
  }
}

static void on_acceptable(int listener) {
  for (;;) {
    int fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return; /* EAGAIN, or EMFILE and the like: try again on the next event */
    if ((size_t)fd >= fd_slots) {
      close(fd);
      continue;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.fd = fd};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
  }
}

/* Opens a listener on host:port (SO_REUSEPORT when several threads share the port). */
static int open_listener(struct sockaddr_in *addr, int reuse_port) {
  int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (listener < 0) die("socket");
  int one = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (reuse_port && setsockopt(listener, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0) die("SO_REUSEPORT");
  if (bind(listener, (struct sockaddr *)addr, sizeof *addr) < 0) die("bind");
  if (listen(listener, 4096) < 0) die("listen");
  socklen_t len = sizeof *addr;
  getsockname(listener, (struct sockaddr *)addr, &len);
  return listener;
}

/* One thread's event loop over its own listener; never returns. */
static void *serve(void *arg) {
  int listener = (int)(intptr_t)arg;
  read_buffer = malloc(READ_BUFFER);
  if (!read_buffer) die("malloc");
  epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) die("epoll_create1");
  struct epoll_event lev = {.events = EPOLLIN, .data.fd = listener};
  if (epoll_ctl(epfd, EPOLL_CTL_ADD, listener, &lev) < 0) die("epoll_ctl");
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
      } else {
        on_event(fd, events[i].events); /* EPOLLHUP/EPOLLERR too: read() or write() then reports them */
      }
    }
  }
  return NULL;
}

int main(int argc, char **argv) {
  int port = argc > 1 ? atoi(argv[1]) : 0;
  const char *host = argc > 2 ? argv[2] : "127.0.0.1";
  int threads = argc > 3 ? atoi(argv[3]) : 1;
  if (threads < 1 || threads > 1024) {
    fprintf(stderr, "epoll_echo: threads must be 1 to 1024\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);

  /* As many connections as the hard limit allows (the memory measurement opens thousands). */
  struct rlimit lim;
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0) {
    lim.rlim_cur = lim.rlim_max;
    setrlimit(RLIMIT_NOFILE, &lim);
  }
  getrlimit(RLIMIT_NOFILE, &lim);
  fd_slots = lim.rlim_cur > 1000000 ? 1000000 : lim.rlim_cur;
  pending_by_fd = calloc(fd_slots, sizeof *pending_by_fd);
  if (!pending_by_fd) die("calloc");

  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
    fprintf(stderr, "epoll_echo: %s is not an IPv4 address\n", host);
    return 2;
  }
  /* The first listener picks the port (when it is 0); the others join it. */
  int *listeners = calloc((size_t)threads, sizeof *listeners);
  if (!listeners) die("calloc");
  for (int t = 0; t < threads; t++) listeners[t] = open_listener(&addr, threads > 1);
  printf("listening on port %d\n", ntohs(addr.sin_port));
  fflush(stdout);
  for (int t = 1; t < threads; t++) {
    pthread_t thread;
    if (pthread_create(&thread, NULL, serve, (void *)(intptr_t)listeners[t]) != 0) die("pthread_create");
  }
  serve((void *)(intptr_t)listeners[0]);
  return 0;
}
