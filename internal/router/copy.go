package router

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
)

// copyBufSize is the size of the buffers of the plain copy path: two full
// TLS records. A read that fills a buffer means bulk (more bytes were
// already queued), and the direction switches to io.Copy, which the runtime
// turns into splice(2) between TCP sockets.
//
// Why not splice from the start: for the few small messages of a short
// connection (a handshake, a request, a response) splice costs more than it
// saves. Each direction would take a pipe from the runtime's pool and keep
// it (two more descriptors) for the connection's lifetime, and every
// message would still cost two system calls. Plain read and write cost the
// same two calls and copy a few hundred bytes twice. Measured with the
// harness in bench/router; see the package documentation.
const copyBufSize = 32 << 10

// copyBufs holds the buffers of the plain copy path. A direction takes one
// only while bytes are in flight, not while it waits for them, so an idle
// connection holds no buffer.
var copyBufs = sync.Pool{New: func() any {
	b := make([]byte, copyBufSize)
	return &b
}}

// halfPipe is one direction of a routed connection: it copies src to dst.
type halfPipe struct {
	src, dst net.Conn
	// raw is src's, when src is a socket of the net package; nil
	// otherwise, and then the copy is plain io.Copy.
	raw    syscall.RawConn
	readFn func(fd uintptr) bool // readFD bound to this halfPipe, made once

	// Results of readFD.
	buf *[]byte
	n   int
	err error
}

// init prepares h to copy src to dst.
func (h *halfPipe) init(dst, src net.Conn) {
	h.src, h.dst = src, dst
	// Only the net package's own types: a wrapper that embeds one may
	// buffer bytes of its own, which reading the descriptor would skip.
	var sc syscall.Conn
	switch c := src.(type) {
	case *net.TCPConn:
		sc = c
	case *net.UnixConn:
		sc = c
	default:
		return
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return
	}
	h.raw = raw
	h.readFn = h.readFD
}

// readFD reads from the socket into a pooled buffer, taken only now that
// the socket may be readable. It reports false to wait for readability (the
// runtime's poller, with src's deadlines) and true when there is a result.
func (h *halfPipe) readFD(fd uintptr) bool {
	bp := copyBufs.Get().(*[]byte)
	for {
		n, err := syscall.Read(int(fd), *bp)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			copyBufs.Put(bp)
			return false
		case err != nil:
			copyBufs.Put(bp)
			h.n, h.err = 0, os.NewSyscallError("read", err)
		case n == 0:
			copyBufs.Put(bp)
			h.n, h.err = 0, io.EOF
		default:
			h.buf, h.n, h.err = bp, n, nil
		}
		return true
	}
}

// copy copies until src's EOF, and returns nil then; otherwise the error
// of either side.
func (h *halfPipe) copy() error {
	if h.raw != nil {
		for {
			if err := h.raw.Read(h.readFn); err != nil {
				return err // closed, or a deadline
			}
			if h.err != nil {
				if errors.Is(h.err, io.EOF) {
					return nil
				}
				return h.err
			}
			bp, n := h.buf, h.n
			h.buf = nil
			_, err := h.dst.Write((*bp)[:n])
			copyBufs.Put(bp)
			if err != nil {
				return err
			}
			if n == copyBufSize {
				break // bulk: let the kernel move it
			}
		}
	}
	_, err := io.Copy(h.dst, h.src)
	return err
}
