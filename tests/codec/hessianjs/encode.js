// Encode Dubbo request bodies with hessian.js (an independent hessian2
// writer) for tests/codec/test_dubbo.py. stdin: a JSON list of messages, each
// a list of tagged values (see toJs); stdout: one hex body per line.
'use strict';
const hessian = require('hessian.js');

function toJs(v, kept) {
  const [tag, a, b] = v;
  switch (tag) {
    case 'null': return null;
    case 'bool': return a;
    case 'int': return { $class: 'int', $: a };
    case 'long': return { $class: 'long', $: a };
    case 'double': return { $class: 'double', $: a };
    case 'date': return new Date(a);
    case 'str': return a;
    case 'bin': return Buffer.from(a, 'hex');
    case 'list': return a.map((x) => toJs(x, kept));
    case 'tlist': return { $class: a, $: b.map((x) => toJs(x, kept)) };
    case 'map': return new Map(a.map(([k, x]) => [toJs(k, kept), toJs(x, kept)]));
    case 'tmap': return { $class: a, $: new Map(b.map(([k, x]) => [toJs(k, kept), toJs(x, kept)])) };
    case 'obj': {
      const fields = {};
      for (const [name, x] of b) fields[name] = toJs(x, kept);
      return { $class: a, $: fields };
    }
    case 'keep': kept[a] = toJs(b, kept); return kept[a];
    case 'ref': return kept[a];
    default: throw new Error('unknown tag ' + tag);
  }
}

let input = '';
process.stdin.on('data', (c) => { input += c; });
process.stdin.on('end', () => {
  const out = [];
  for (const values of JSON.parse(input)) {
    const enc = new hessian.EncoderV2();
    const kept = {};
    for (const v of values) enc.write(toJs(v, kept));
    out.push(enc.get().toString('hex'));
  }
  process.stdout.write(out.join('\n') + '\n');
});
