"""A file system that forgets what was not made durable, like Jepsen's LazyFS.

    python3 lazyfs.py BACKING MOUNTPOINT

Passes every operation through to BACKING and remembers, for each file and directory, what
was last made durable: a file's content as of its last fsync (the pages written since are
saved as they were, its size as it was), a directory's entries as of its last fsync (the
names added, removed or renamed since are undone). Whatever is in BACKING at mount counts as
durable.

SIGUSR1 is the power cut: from then on every operation fails with EIO, so nothing more becomes
durable. SIGTERM unmounts; if the cut happened, BACKING is first put back to its durable state
(pages restored, files truncated to their durable size, directory entries restored, and
everything not durable dropped), so remounting shows what a machine shows after losing power.
"""

import errno
import os
import signal
import stat
import sys

import mfusepy as fuse

PAGE = 4096


class FileUndo:
    """What a file held when it was last durable: its size, and the pages changed since."""

    def __init__(self, size):
        self.size = size
        self.pages = {}


class LazyFs:
    use_ns = True

    def __init__(self, backing):
        self.backing = os.path.realpath(backing)
        self.grave = self.backing + ".lazyfs-grave"
        os.makedirs(self.grave, exist_ok=True)
        self.files = {}  # inode -> FileUndo, for files changed since their last fsync
        self.dirs = {}  # inode -> {name: inode}, for directories changed since their last fsync
        self.cut = False

    # --- the model -------------------------------------------------------------------------

    def real(self, path):
        return self.backing + path

    def check(self):
        if self.cut:
            raise fuse.FuseOSError(errno.EIO)

    def dir_changes(self, dir_path):
        """Remembers a directory's durable entries before its first change since its fsync."""
        inode = os.lstat(dir_path).st_ino
        if inode not in self.dirs:
            self.dirs[inode] = {entry.name: entry.inode() for entry in os.scandir(dir_path)}

    def entry_goes(self, path):
        """Keeps the inode behind a name about to be removed or replaced, for a restore."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        kept = os.path.join(self.grave, str(st.st_ino))
        if stat.S_ISDIR(st.st_mode) or os.path.lexists(kept):
            return
        os.link(path, kept, follow_symlinks=False)

    def file_changes(self, fd, start, end):
        """Saves the durable bytes of pages [start, end) about to be overwritten."""
        st = os.fstat(fd)
        undo = self.files.get(st.st_ino)
        if undo is None:
            undo = self.files[st.st_ino] = FileUndo(st.st_size)
        first, last = start // PAGE, (min(end, undo.size) + PAGE - 1) // PAGE
        for page in range(first, last):
            if page not in undo.pages:
                undo.pages[page] = os.pread(fd, min(PAGE, undo.size - page * PAGE), page * PAGE)

    # --- operations ------------------------------------------------------------------------

    def getattr(self, path, fh=None):
        self.check()
        st = os.fstat(fh) if fh is not None else os.lstat(self.real(path))
        keys = ("st_mode", "st_ino", "st_nlink", "st_uid", "st_gid", "st_size", "st_blocks")
        attrs = {key: getattr(st, key) for key in keys}
        for key in ("st_atime", "st_mtime", "st_ctime"):
            attrs[key] = getattr(st, key + "_ns")
        return attrs

    def access(self, path, amode):
        self.check()
        if not os.access(self.real(path), amode):
            raise fuse.FuseOSError(errno.EACCES)
        return 0

    def readdir(self, path, fh):
        self.check()
        real = self.real(path)
        entries = [(".", {"st_mode": stat.S_IFDIR, "st_ino": os.lstat(real).st_ino}, 0)]
        for entry in os.scandir(real):
            mode = entry.stat(follow_symlinks=False).st_mode
            entries.append((entry.name, {"st_mode": mode, "st_ino": entry.inode()}, 0))
        return entries

    def statfs(self, path):
        self.check()
        st = os.statvfs(self.real(path))
        keys = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree",
                "f_files", "f_flag", "f_frsize", "f_namemax")
        return {key: getattr(st, key) for key in keys}

    def open(self, path, flags):
        self.check()
        # Read-write whatever was asked, so the pages a write replaces can be saved first; the
        # kernel gives append writes their offsets.
        if flags & os.O_ACCMODE != os.O_RDONLY:
            flags = flags & ~os.O_ACCMODE | os.O_RDWR
        fd = os.open(self.real(path), flags & ~(os.O_TRUNC | os.O_APPEND))
        if flags & os.O_TRUNC:
            self.file_changes(fd, 0, os.fstat(fd).st_size)
            os.ftruncate(fd, 0)
        return fd

    def create(self, path, mode, fi=None):
        self.check()
        real = self.real(path)
        self.dir_changes(os.path.dirname(real))
        self.entry_goes(real)
        fd = os.open(real, os.O_RDWR | os.O_CREAT | os.O_TRUNC, mode)
        self.files[os.fstat(fd).st_ino] = FileUndo(0)
        return fd

    def read(self, path, size, offset, fh):
        self.check()
        return os.pread(fh, size, offset)

    def write(self, path, data, offset, fh):
        self.check()
        self.file_changes(fh, offset, offset + len(data))
        return os.pwrite(fh, data, offset)

    def truncate(self, path, length, fh=None):
        self.check()
        fd = fh if fh is not None else os.open(self.real(path), os.O_RDWR)
        try:
            self.file_changes(fd, length, os.fstat(fd).st_size)
            os.ftruncate(fd, length)
        finally:
            if fh is None:
                os.close(fd)
        return 0

    def fsync(self, path, datasync, fh):
        self.check()
        os.fsync(fh)
        self.files.pop(os.fstat(fh).st_ino, None)
        return 0

    def fsyncdir(self, path, datasync, fh):
        self.check()
        self.dirs.pop(os.lstat(self.real(path)).st_ino, None)
        return 0

    def flush(self, path, fh):
        self.check()
        return 0

    def release(self, path, fh):
        os.close(fh)
        return 0

    def opendir(self, path):
        self.check()
        return 0

    def releasedir(self, path, fh):
        return 0

    def mkdir(self, path, mode):
        self.check()
        real = self.real(path)
        self.dir_changes(os.path.dirname(real))
        os.mkdir(real, mode)
        self.dirs[os.lstat(real).st_ino] = {}
        return 0

    def rmdir(self, path):
        self.check()
        real = self.real(path)
        self.dir_changes(os.path.dirname(real))
        if os.listdir(real):
            raise fuse.FuseOSError(errno.ENOTEMPTY)
        # Kept, not removed, so a restore can put the same directory back.
        os.rename(real, os.path.join(self.grave, str(os.lstat(real).st_ino)))
        return 0

    def unlink(self, path):
        self.check()
        real = self.real(path)
        self.dir_changes(os.path.dirname(real))
        self.entry_goes(real)
        os.unlink(real)
        return 0

    def rename(self, old, new):
        self.check()
        old_real, new_real = self.real(old), self.real(new)
        self.dir_changes(os.path.dirname(old_real))
        self.dir_changes(os.path.dirname(new_real))
        self.entry_goes(new_real)
        if os.path.isdir(new_real) and not os.path.islink(new_real):
            if os.listdir(new_real):
                raise fuse.FuseOSError(errno.ENOTEMPTY)
            os.rename(new_real, os.path.join(self.grave, str(os.lstat(new_real).st_ino)))
        os.rename(old_real, new_real)
        return 0

    def link(self, target, source):
        self.check()
        real = self.real(target)
        self.dir_changes(os.path.dirname(real))
        os.link(self.real(source), real)
        return 0

    def chmod(self, path, mode):
        self.check()
        os.chmod(self.real(path), mode)
        return 0

    def chown(self, path, uid, gid):
        self.check()
        os.chown(self.real(path), uid, gid)
        return 0

    def utimens(self, path, times=None):
        self.check()
        os.utime(self.real(path), ns=times)
        return 0

    # --- the power cut -----------------------------------------------------------------------

    def restore(self):
        """Puts BACKING back to what was durable."""
        for _ in range(len(self.dirs) + 1):
            if not self.restore_entries():
                break
        where = self.locations()
        for inode, undo in self.files.items():
            path = where.get(inode)
            if path is None or not os.path.isfile(path):
                continue
            with open(path, "r+b") as out:
                for page, content in undo.pages.items():
                    out.seek(page * PAGE)
                    out.write(content)
                out.truncate(undo.size)

    def locations(self):
        """Where each inode is now, in BACKING or kept aside."""
        where = {}
        for root in (self.backing, self.grave):
            for dirpath, dirnames, filenames in os.walk(root):
                where.setdefault(os.lstat(dirpath).st_ino, dirpath)
                for name in filenames + dirnames:
                    path = os.path.join(dirpath, name)
                    where.setdefault(os.lstat(path).st_ino, path)
        return where

    def restore_entries(self):
        """One pass over the changed directories; True if it moved a directory (paths changed)."""
        where = self.locations()
        for inode, durable in self.dirs.items():
            dir_path = where.get(inode)
            if dir_path is None:
                continue
            current = {entry.name: entry.inode() for entry in os.scandir(dir_path)}
            for name, found in current.items():
                if durable.get(name) == found:
                    continue
                path = os.path.join(dir_path, name)
                moved_dir = os.path.isdir(path) and not os.path.islink(path)
                where[found] = self.set_aside(path, found)
                if moved_dir:
                    return True
            for name, wanted in durable.items():
                if current.get(name) == wanted:
                    continue
                source = where.get(wanted)
                if source is None:
                    continue
                target = os.path.join(dir_path, name)
                if os.path.isdir(source) and not os.path.islink(source):
                    os.rename(source, target)
                    return True
                os.link(source, target, follow_symlinks=False)
        return False

    def set_aside(self, path, inode):
        """Moves a name that was not durable out of the way, keeping its inode; where it is now."""
        kept = os.path.join(self.grave, str(inode))
        if os.path.lexists(kept) and not os.path.isdir(path):
            os.unlink(path)
        else:
            os.rename(path, kept)
        return kept


def remove_tree(path):
    for dirpath, dirnames, filenames in os.walk(path, topdown=False):
        for name in filenames:
            os.unlink(os.path.join(dirpath, name))
        for name in dirnames:
            os.rmdir(os.path.join(dirpath, name))
    os.rmdir(path)


def main():
    backing, mountpoint = sys.argv[1], sys.argv[2]
    fs = LazyFs(backing)

    def power_cut(signum, frame):
        fs.cut = True

    signal.signal(signal.SIGUSR1, power_cut)
    try:
        fuse.FUSE(fs, mountpoint, foreground=True, nothreads=True, use_ino=True,
                  debug=bool(os.environ.get("LAZYFS_DEBUG")),
                  attr_timeout=0, entry_timeout=0, negative_timeout=0)
    except RuntimeError:
        pass  # libfuse's loop ended by SIGTERM reports the signal's number
    if fs.cut:
        fs.restore()
    remove_tree(fs.grave)


if __name__ == "__main__":
    main()
