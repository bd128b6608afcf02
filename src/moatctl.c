/*
 * moatctl.c: the operator's command line client of moatd's control
 * socket (protocol in control.h, server in control.c).
 *
 *   moatctl [-s socket] [-c config] [--json] command [args...]
 *
 * The command is checked locally with the same table the daemon uses
 * (control_parse.c), so a usage error exits 2 without connecting.  The
 * request goes out as one line; the first answer line is "OK" or
 * "ERR <message>"; the body is copied to stdout as it arrives.
 *
 * Exit codes: 0 OK, 1 the daemon answered ERR, 2 usage error, 3 the
 * daemon cannot be reached (or the connection broke mid-answer).
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "control.h"

#define MOATCTL_SOCKET		"./var/moat.sock"
#define MOATCTL_TIMEOUT_MS	(60 * 1000)	/* per read */

enum {
	MOATCTL_OK = 0,
	MOATCTL_ERR = 1,
	MOATCTL_USAGE = 2,
	MOATCTL_UNREACHABLE = 3
};

static void __attribute__((noreturn))
usage(int code)
{
	const struct control_command	*cmds = control_parse_commands();
	FILE				*f = code == 0 ? stdout : stderr;
	int				 i;

	fprintf(f, "usage: moatctl [-s socket] [-c config] [--json] "
	    "command [args...]\n"
	    "  -s PATH   control socket (default %s, or $MOAT_SOCKET)\n"
	    "  -c FILE   take control_socket from a moat config file\n"
	    "  --json    answer as one JSON document\n"
	    "commands:\n", MOATCTL_SOCKET);
	for (i = 0; i < CONTROL_CMD_MAX; i++)
		fprintf(f, "  %s\n", cmds[i].usage);
	fprintf(f, "exit: 0 ok, 1 daemon answered ERR, 2 usage, "
	    "3 daemon unreachable\n");
	exit(code);
}

/*
 * -c FILE: finds a top-level "control_socket = value;" line (value
 * optionally quoted).  Deliberately simple: it does not know blocks,
 * includes or comments after the value; -s is the reliable way.
 * Returns 0 and the path in buf, or -1 with a message on stderr.
 */
static int
socket_from_config(const char *file, char *buf, size_t len)
{
	FILE	*f;
	char	 line[2048], *p, *end;
	size_t	 n;
	int	 found = -1;

	if ((f = fopen(file, "r")) == NULL) {
		fprintf(stderr, "moatctl: %s: %s\n", file, strerror(errno));
		return -1;
	}
	while (found != 0 && fgets(line, sizeof line, f) != NULL) {
		p = line + strspn(line, " \t");
		if (strncmp(p, "control_socket", 14) != 0)
			continue;
		p += 14;
		p += strspn(p, " \t");
		if (*p == '=' || *p == ':')
			p++;
		p += strspn(p, " \t");
		if (*p == '"') {
			p++;
			if ((end = strchr(p, '"')) == NULL)
				continue;
		} else
			end = p + strcspn(p, " \t;\r\n#");
		n = (size_t)(end - p);
		if (n == 0 || n >= len)
			continue;
		memcpy(buf, p, n);
		buf[n] = '\0';
		found = 0;
	}
	fclose(f);
	if (found != 0)
		fprintf(stderr, "moatctl: %s: no control_socket found "
		    "(use -s)\n", file);
	return found;
}

/* Joins argv into one request line; -1 if a word cannot be sent. */
static int
build_request(char *buf, size_t len, bool json, int argc, char **argv)
{
	size_t	off = 0, n;
	int	i;

	buf[0] = '\0';
	if (json) {
		if (len < 8)
			return -1;
		memcpy(buf, "--json ", 7);
		off = 7;
	}
	for (i = 0; i < argc; i++) {
		n = strlen(argv[i]);
		if (n == 0 || strpbrk(argv[i], " \t") != NULL)
			return -1;	/* would change the word split */
		if (off + n + 2 > len)
			return -1;
		memcpy(buf + off, argv[i], n);
		off += n;
		buf[off++] = i + 1 < argc ? ' ' : '\0';
	}
	buf[off] = '\0';
	return 0;
}

static int
write_all(int fd, const char *p, size_t n)
{
	ssize_t	w;

	while (n > 0) {
		/* MSG_NOSIGNAL: a daemon that closed early is an error, not
		 * a SIGPIPE death with a meaningless exit status. */
		w = send(fd, p, n, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* read() with a timeout; -1 with errno ETIMEDOUT when it expires. */
static ssize_t
read_timeout(int fd, char *buf, size_t len)
{
	struct pollfd	pfd = { .fd = fd, .events = POLLIN };
	int		r;
	ssize_t		n;

	for (;;) {
		r = poll(&pfd, 1, MOATCTL_TIMEOUT_MS);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0) {
			errno = ETIMEDOUT;
			return -1;
		}
		n = read(fd, buf, len);
		if (n < 0 && errno == EINTR)
			continue;
		return n;
	}
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	struct control_request		 req;
	const struct control_command	*cmd;
	struct sockaddr_un		 sun;
	const char			*sock, *why;
	char				 confsock[1024];
	char				 line[CONTROL_LINE_MAX + 2];
	char				 buf[8192], first[CONTROL_LINE_MAX + 64];
	size_t				 flen = 0, n;
	ssize_t				 r;
	bool				 json = false, got_first = false;
	bool				 ok = false;
	char				*nl;
	int				 ch, fd, nw;

	if ((sock = getenv("MOAT_SOCKET")) == NULL || *sock == '\0')
		sock = MOATCTL_SOCKET;
	/* "+": options stop at the command, so its own --flags pass. */
	while ((ch = getopt_long(argc, argv, "+s:c:jh", longopts,
	    NULL)) != -1) {
		switch (ch) {
		case 's':
			sock = optarg;
			break;
		case 'c':
			if (socket_from_config(optarg, confsock,
			    sizeof confsock) != 0)
				return MOATCTL_USAGE;
			sock = confsock;
			break;
		case 'j':
			json = true;
			break;
		case 'h':
			usage(MOATCTL_OK);
		default:
			usage(MOATCTL_USAGE);
		}
	}
	argc -= optind;
	argv += optind;
	if (argc == 0)
		usage(MOATCTL_USAGE);

	/* The daemon's own checks, run locally first. */
	if (build_request(line, sizeof line, json, argc, argv) != 0) {
		fprintf(stderr, "moatctl: bad request: arguments must be "
		    "non-empty words without blanks, %d bytes at most\n",
		    CONTROL_LINE_MAX);
		return MOATCTL_USAGE;
	}
	if (control_parse_request(line, strlen(line), &req, &why) != 0) {
		fprintf(stderr, "moatctl: bad request: %s\n", why);
		return MOATCTL_USAGE;
	}
	if ((cmd = control_parse_lookup(req.argc, req.argv)) == NULL) {
		fprintf(stderr, "moatctl: unknown command: %s%s%s\n",
		    req.argv[0], req.argc > 1 ? " " : "",
		    req.argc > 1 ? req.argv[1] : "");
		usage(MOATCTL_USAGE);
	}
	nw = control_parse_nwords(cmd);
	if (control_parse_check(cmd, req.argc - nw, req.argv + nw,
	    &why) != 0) {
		fprintf(stderr, "moatctl: %s\nusage: moatctl %s\n", why,
		    cmd->usage);
		return MOATCTL_USAGE;
	}

	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	if (strlen(sock) >= sizeof sun.sun_path) {
		fprintf(stderr, "moatctl: socket path too long: %s\n", sock);
		return MOATCTL_USAGE;
	}
	memcpy(sun.sun_path, sock, strlen(sock) + 1);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 ||
	    connect(fd, (struct sockaddr *)&sun, sizeof sun) != 0) {
		fprintf(stderr, "moatctl: cannot connect to %s: %s "
		    "(is moatd running?)\n", sock, strerror(errno));
		return MOATCTL_UNREACHABLE;
	}
	n = strlen(line);
	line[n++] = '\n';
	/*
	 * A refusal ("ERR too many control connections") may arrive and
	 * the socket close before the request is written: still read it.
	 */
	if (write_all(fd, line, n) != 0 && errno != EPIPE &&
	    errno != ECONNRESET) {
		fprintf(stderr, "moatctl: write to %s: %s\n", sock,
		    strerror(errno));
		close(fd);
		return MOATCTL_UNREACHABLE;
	}

	for (;;) {
		r = read_timeout(fd, buf, sizeof buf);
		if (r < 0) {
			fprintf(stderr, "moatctl: read from %s: %s\n", sock,
			    strerror(errno));
			close(fd);
			return MOATCTL_UNREACHABLE;
		}
		if (r == 0)
			break;
		if (got_first) {
			if (fwrite(buf, 1, (size_t)r, stdout) != (size_t)r)
				break;
			continue;
		}
		/* The status line is bounded; anything longer is broken.
		 * One read may hold the status line and part of the body. */
		nl = memchr(buf, '\n', (size_t)r);
		n = nl != NULL ? (size_t)(nl - buf) + 1 : (size_t)r;
		if (flen + n > sizeof first - 1) {
			fprintf(stderr, "moatctl: bad answer from %s\n",
			    sock);
			close(fd);
			return MOATCTL_UNREACHABLE;
		}
		memcpy(first + flen, buf, n);
		flen += n;
		first[flen] = '\0';
		if (nl == NULL)
			continue;
		first[flen - 1] = '\0';
		got_first = true;
		if (strcmp(first, "OK") == 0)
			ok = true;
		else if (strncmp(first, "ERR ", 4) == 0 ||
		    strcmp(first, "ERR") == 0) {
			/* stderr also with --json: stdout stays JSON. */
			fprintf(stderr, "moatctl: %s\n",
			    first[3] != '\0' ? first + 4 : "error");
		} else {
			fprintf(stderr, "moatctl: bad answer from %s\n",
			    sock);
			close(fd);
			return MOATCTL_UNREACHABLE;
		}
		if ((size_t)r > n &&
		    fwrite(buf + n, 1, (size_t)r - n, stdout) != (size_t)r - n)
			break;
	}
	close(fd);
	if (fflush(stdout) != 0) {
		fprintf(stderr, "moatctl: stdout: %s\n", strerror(errno));
		return MOATCTL_ERR;
	}
	if (!got_first) {
		fprintf(stderr, "moatctl: %s closed without an answer\n",
		    sock);
		return MOATCTL_UNREACHABLE;
	}
	return ok ? MOATCTL_OK : MOATCTL_ERR;
}
