package adminserver

import (
	"errors"
	"net"
	"os/user"
	"slices"
	"strconv"

	"golang.org/x/sys/unix"
)

// Role is what a caller may do.
type Role int

const (
	// RoleNone may do nothing: every request is refused.
	RoleNone Role = iota
	// RoleRead may call the GET routes (status, sessions, devices, revocations).
	RoleRead
	// RoleWrite may call every route, including kick, import, sync and pair.
	RoleWrite
)

func (r Role) String() string {
	switch r {
	case RoleRead:
		return "read"
	case RoleWrite:
		return "write"
	}
	return "none"
}

// Peer is the credentials of the process on the other end of the socket.
type Peer struct {
	UID, GID uint32
	PID      int32
}

type peerKey struct{}

// peerOf reads the peer's credentials (SO_PEERCRED).
func peerOf(c net.Conn) (Peer, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return Peer{}, errors.New("not a unix socket")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return Peer{}, err
	}
	var cred *unix.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) { cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); err != nil {
		return Peer{}, err
	}
	if serr != nil {
		return Peer{}, serr
	}
	return Peer{UID: cred.Uid, GID: cred.Gid, PID: cred.Pid}, nil
}

// Groups maps a peer to a role by group: root and WriteGID write, ReadGID
// reads, anyone else nothing.
type Groups struct {
	// WriteGID and ReadGID are the groups' ids; -1 when a group does not
	// exist (then nobody gets its role through it).
	WriteGID, ReadGID int
	// Supplementary lists a user's group ids; nil looks them up with os/user.
	Supplementary func(uid uint32) ([]string, error)
}

// LookupGroups resolves the write and read groups by name, once.
func LookupGroups(write, read string) Groups {
	return Groups{WriteGID: lookupGID(write), ReadGID: lookupGID(read)}
}

func lookupGID(name string) int {
	if name == "" {
		return -1
	}
	grp, err := user.LookupGroup(name)
	if err != nil {
		return -1
	}
	gid, err := strconv.Atoi(grp.Gid)
	if err != nil {
		return -1
	}
	return gid
}

// Role is the peer's role: the primary group counts, and so do the
// supplementary groups of the peer's user (looked up at most once).
func (g Groups) Role(p Peer) Role {
	if p.UID == 0 {
		return RoleWrite
	}
	var gids []string
	looked := false
	member := func(gid int) bool {
		if gid < 0 {
			return false
		}
		if int(p.GID) == gid {
			return true
		}
		if !looked {
			looked = true
			sup := g.Supplementary
			if sup == nil {
				sup = userGroups
			}
			if l, err := sup(p.UID); err == nil {
				gids = l
			}
		}
		return slices.Contains(gids, strconv.Itoa(gid))
	}
	switch {
	case member(g.WriteGID):
		return RoleWrite
	case member(g.ReadGID):
		return RoleRead
	}
	return RoleNone
}

func userGroups(uid uint32) ([]string, error) {
	u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10))
	if err != nil {
		return nil, err
	}
	return u.GroupIds()
}
