// The scenarios of tests/fs_vs_node.rs, run with Node's `fs` (callback
// API) on a fixture the Rust test made: `node fs_vs_node.js ROOT`.
// Prints one line per step, `label => ok VALUE` or
// `label => err CODE | MESSAGE`, with ROOT written `<root>`; the Rust test
// prints the same lines for eventide and compares them. Keep the two lists
// of steps in the same order.
'use strict';
const fs = require('fs');
const path = require('path');

const root = process.argv[2];
const at = (p) => path.join(root, p);
const hide = (s) => String(s).split(root).join('<root>');

function show(label, err, value) {
  if (err) {
    console.log(`${label} => err ${err.code} | ${hide(err.message)}`);
  } else {
    console.log(`${label} => ok${value === undefined ? '' : ' ' + hide(value)}`);
  }
}

// Runs `start(callback)`; a throw (Node's argument errors) counts as the
// callback's error, as eventide reports those through the callback. Only
// the first call counts (a stream's `end` callback also hears its error).
function step(label, start, value = (v) => v) {
  return new Promise((resolve) => {
    let called = false;
    try {
      start((err, v) => {
        if (called) return;
        called = true;
        show(label, err, err ? undefined : value(v));
        resolve();
      });
    } catch (err) {
      show(label, err);
      resolve();
    }
  });
}

function state(label, value) {
  console.log(`${label} => state ${hide(value)}`);
}

const list = (dir) => fs.readdirSync(at(dir)).sort().join(',') || '-';
const exists = (p) => {
  try {
    fs.lstatSync(at(p));
    return 'yes';
  } catch {
    return 'no';
  }
};
const stats = (s) => `${s.isFile() ? 'file' : s.isDirectory() ? 'dir' : s.isSymbolicLink() ? 'link' : 'other'} size=${s.isSymbolicLink() ? '-' : s.size} mtimeMs=${s.mtimeMs}`;

(async () => {
  // Metadata.
  await step('stat a', (cb) => fs.stat(at('a'), cb), stats);
  await step('stat old', (cb) => fs.stat(at('old'), cb), stats);
  await step('lstat old', (cb) => fs.lstat(at('old'), cb), stats);
  await step('fstat old', (cb) => fs.open(at('old'), 'r', (err, fd) => {
    if (err) return cb(err);
    fs.fstat(fd, (err, s) => fs.close(fd, () => cb(err, s)));
  }), stats);
  await step('lstat soft', (cb) => fs.lstat(at('soft'), cb), (s) => stats(s).split(' mtimeMs')[0]);
  await step('stat missing', (cb) => fs.stat(at('missing'), cb));
  await step('stat under a file', (cb) => fs.stat(at('a/x'), cb));
  // Single operations and their main errors.
  await step('open missing', (cb) => fs.open(at('missing'), 'r', cb));
  await step('open bad flags', (cb) => fs.open(at('a'), 'rw', cb));
  await step('readdir dir', (cb) => fs.readdir(at('dir'), cb), (v) => v.sort().join(','));
  await step('readdir a file', (cb) => fs.readdir(at('a'), cb));
  await step('rename missing', (cb) => fs.rename(at('missing'), at('x'), cb));
  await step('unlink dir', (cb) => fs.unlink(at('dir'), cb));
  await step('rmdir full dir', (cb) => fs.rmdir(at('dir'), cb));
  await step('mkdir existing', (cb) => fs.mkdir(at('a'), cb));
  await step('readlink a file', (cb) => fs.readlink(at('a'), cb));
  await step('readlink soft', (cb) => fs.readlink(at('soft'), cb));
  await step('realpath soft', (cb) => fs.realpath.native(at('soft'), cb));
  await step('link onto existing', (cb) => fs.link(at('a'), at('hard'), cb));
  await step('symlink onto existing', (cb) => fs.symlink('a', at('soft'), cb));
  await step('chmod missing', (cb) => fs.chmod(at('missing'), 0o644, cb));
  await step('truncate missing', (cb) => fs.truncate(at('missing'), 0, cb));
  await step('access missing', (cb) => fs.access(at('missing'), cb));
  await step('readFile dir', (cb) => fs.readFile(at('dir'), cb));
  await step('readFile missing', (cb) => fs.readFile(at('missing'), cb));
  await step('readFile a', (cb) => fs.readFile(at('a'), cb), (v) => v.toString());
  await step('stat a/', (cb) => fs.stat(at('a') + '/', cb));
  await step('open dir for writing', (cb) => fs.open(at('dir'), 'w', cb));
  await step('open wx existing', (cb) => fs.open(at('a'), 'wx', cb));
  await step('readdir missing', (cb) => fs.readdir(at('missing'), cb));
  await step('rmdir missing', (cb) => fs.rmdir(at('missing'), cb));
  await step('rmdir a file', (cb) => fs.rmdir(at('a'), cb));
  await step('rename into itself', (cb) => fs.rename(at('dir'), at('dir/sub/in'), cb));
  await step('utimes missing', (cb) => fs.utimes(at('missing'), 1, 1, cb));
  await step('chown missing', (cb) => fs.chown(at('missing'), 0, 0, cb));
  await step('lchown missing', (cb) => fs.lchown(at('missing'), 0, 0, cb));
  await step('realpath missing', (cb) => fs.realpath.native(at('missing'), cb));
  await step('realpath dangling', (cb) => fs.realpath.native(at('dang'), cb));
  await step('readlink missing', (cb) => fs.readlink(at('missing'), cb));
  await step('symlink under missing', (cb) => fs.symlink('a', at('missing/l'), cb));
  await step('link missing', (cb) => fs.link(at('missing'), at('l'), cb));
  await step('truncate dir', (cb) => fs.truncate(at('dir'), 0, cb));
  await step('access a X_OK', (cb) => fs.access(at('a'), fs.constants.X_OK, cb));
  await step('writeFile dir', (cb) => fs.writeFile(at('dir'), 'x', cb));
  await step('appendFile new', (cb) => fs.appendFile(at('app'), 'one', cb));
  await step('appendFile again', (cb) => fs.appendFile(at('app'), 'two', cb));
  state('app', fs.readFileSync(at('app'), 'utf8'));
  await step('chmod a 640', (cb) => fs.chmod(at('app'), 0o640, cb));
  await step('stat app mode', (cb) => fs.stat(at('app'), cb), (s) => (s.mode & 0o7777).toString(8));
  await step('readStream start 1 end 3', (cb) => {
    let got = '';
    fs.createReadStream(at('a'), { start: 1, end: 3 })
      .on('data', (c) => { got += c; })
      .on('end', () => cb(null, got))
      .on('error', cb);
  });
  await step('readStream missing', (cb) => {
    fs.createReadStream(at('missing')).on('error', cb).on('end', () => cb(null));
  });
  await step('readStream start > end', (cb) => {
    fs.createReadStream(at('a'), { start: 5, end: 2 }).on('error', cb).on('end', () => cb(null));
  });
  await step('writeStream under missing', (cb) => {
    const w = fs.createWriteStream(at('missing/w'));
    w.on('error', cb);
    w.end('x', (err) => cb(err || null));
  });
  // copyFile onto the same file, in every disguise.
  await step('copyFile a a', (cb) => fs.copyFile(at('a'), at('a'), cb));
  state('a after copyFile a a', fs.readFileSync(at('a'), 'utf8'));
  await step('copyFile a hard', (cb) => fs.copyFile(at('a'), at('hard'), cb));
  await step('copyFile a soft', (cb) => fs.copyFile(at('a'), at('soft'), cb));
  await step('copyFile soft a', (cb) => fs.copyFile(at('soft'), at('a'), cb));
  state('a after the copies', fs.readFileSync(at('a'), 'utf8'));
  await step('copyFile a a excl', (cb) => fs.copyFile(at('a'), at('a'), fs.constants.COPYFILE_EXCL, cb));
  await step('copyFile missing', (cb) => fs.copyFile(at('missing'), at('b'), cb));
  await step('copyFile dir fresh', (cb) => fs.copyFile(at('dir'), at('fresh'), cb));
  state('fresh exists', exists('fresh'));
  await step('copyFile dir olddest', (cb) => fs.copyFile(at('dir'), at('olddest'), cb));
  await step('copyFile a copy', (cb) => fs.copyFile(at('a'), at('copy'), cb));
  state('copy', fs.readFileSync(at('copy'), 'utf8'));
  // rm.
  await step('rm tree/link/ recursive', (cb) => fs.rm(at('tree/link') + '/', { recursive: true }, cb));
  state('outside after rm link/', list('outside'));
  state('link after rm link/', exists('tree/link'));
  await step('rm missing', (cb) => fs.rm(at('missing'), {}, cb));
  await step('rm missing force', (cb) => fs.rm(at('missing'), { force: true }, cb));
  await step('rm under a file', (cb) => fs.rm(at('a/x'), { force: true }, cb));
  await step('rm dir', (cb) => fs.rm(at('dir'), {}, cb));
  await step('rm tree recursive', (cb) => fs.rm(at('tree'), { recursive: true }, cb));
  state('outside after rm tree', list('outside'));
  state('tree after rm tree', exists('tree'));
  await step('rm dir recursive', (cb) => fs.rm(at('dir'), { recursive: true }, cb));
  state('dir after rm', exists('dir'));
  await step('rm copy', (cb) => fs.rm(at('copy'), {}, cb));
  await step('rm nul', (cb) => fs.rm(at('a\0b'), {}, cb));
  await step('stat nul', (cb) => fs.stat(at('a\0b'), cb));
  // Recursive mkdir.
  await step('mkdir -p a file', (cb) => fs.mkdir(at('a'), { recursive: true }, cb));
  await step('mkdir -p under a file', (cb) => fs.mkdir(at('a/x/y'), { recursive: true }, cb));
  await step('mkdir -p dangling', (cb) => fs.mkdir(at('dang'), { recursive: true }, cb));
  await step('mkdir -p under dangling', (cb) => fs.mkdir(at('dang/x/y'), { recursive: true }, cb));
  await step('mkdir -p existing', (cb) => fs.mkdir(at('emptydir'), { recursive: true }, cb));
  await step('mkdir -p new/a/', (cb) => fs.mkdir(at('new/a') + '/', { recursive: true }, cb));
  await step('mkdir -p through a link', (cb) => fs.mkdir(at('todir/z'), { recursive: true }, cb));
  state('emptydir', list('emptydir'));
  await step('mkdir -p nul', (cb) => fs.mkdir(at('a\0b'), { recursive: true }, cb));
  // Copies onto a directory and through a dangling link.
  await step('copyFile a emptydir', (cb) => fs.copyFile(at('a'), at('emptydir'), cb));
  await step('copyFile a dang', (cb) => fs.copyFile(at('a'), at('dang'), cb));
  state('nowhere', fs.readFileSync(at('nowhere'), 'utf8'));
})();
