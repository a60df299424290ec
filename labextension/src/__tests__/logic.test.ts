/**
 * Unit tests of the sidebar's pure logic, run with `jlpm test` (tsc to CommonJS + node --test).
 */
import { strict as assert } from 'assert';
import { readFileSync } from 'fs';
import { test } from 'node:test';
import { join } from 'path';

import {
  checkRequestSize,
  curlCommand,
  explanationFacts,
  exportBody,
  exportFolder,
  exportFolderError,
  exportLines,
  formatBytes,
  heatmap,
  nextDelay,
  REFRESH_INTERVAL,
  parseSSE,
  rates,
  refreshIntervalMs,
  tokens,
  topK,
  evaluationRows,
  trafficLine,
  workerState
} from '../logic';

test('worker states map onto four colours', () => {
  assert.equal(workerState('READY'), 'ready');
  assert.equal(workerState('WORKER_STARTED'), 'loading');
  assert.equal(workerState('BUSY'), 'busy');
  assert.equal(workerState('UNLOADING'), 'loading');
  assert.equal(workerState('WORKER_ERROR'), 'failed');
  assert.equal(workerState(undefined), 'failed');
});

test('a file over max_request_size is refused with the limit named', () => {
  assert.equal(checkRequestSize(100, 6553500), null);
  const msg = checkRequestSize(7_000_000, 6553500);
  assert.ok(msg && msg.includes('max_request_size of 6553500 bytes'));
  assert.equal(checkRequestSize(7_000_000, undefined), null);
  assert.equal(formatBytes(6553500), '6.25 MiB');
});

test('top-k from TorchServe, KServe v1 and label/score lists', () => {
  const ts = topK({ '3': 0.1, '7': 0.8, '1': 0.1 });
  assert.deepEqual(ts?.[0], { label: '7', score: 0.8 });
  assert.equal(topK([{ '7': 0.9, '1': 0.1 }])?.[0].label, '7');
  assert.equal(topK({ predictions: [{ '2': 0.6, '5': 0.4 }] })?.[0].label, '2');
  assert.equal(
    topK([
      { label: 'cat', score: 0.3 },
      { label: 'dog', probability: 0.7 }
    ])?.[0].label,
    'dog'
  );
  assert.equal(topK({ a: 'x' }), null);
  assert.equal(topK([[1, 2, 3]]), null);
  assert.equal(topK({ a: 1, b: 2, c: 3 }, 2)?.length, 2);
});

test('rates from cumulative counters skip counter resets', () => {
  const r = rates([
    { t: 0, requests: 0, latencyTotal: 0 },
    { t: 2, requests: 10, latencyTotal: 50 },
    { t: 4, requests: 10, latencyTotal: 50 },
    { t: 6, requests: 2, latencyTotal: 4 } // engine restarted
  ]);
  assert.deepEqual(r, [
    { t: 2, rps: 5, latencyMs: 5 },
    { t: 4, rps: 0, latencyMs: null }
  ]);
});

test('poll delay backs off while the engine is gone', () => {
  assert.equal(nextDelay(0), 2000);
  assert.equal(nextDelay(1), 4000);
  assert.equal(nextDelay(10), 30000);
  // a configured period: used while the engine answers, the back-off starts from it
  assert.equal(nextDelay(0, 500), 500);
  assert.equal(nextDelay(2, 500), 2000);
  assert.equal(nextDelay(20, 500), 30000);
  // a period longer than the cap is never shortened by a failure
  assert.equal(nextDelay(0, 60000), 60000);
  assert.equal(nextDelay(3, 60000), 60000);
});

test('the refreshInterval setting becomes a poll period in ms', () => {
  assert.equal(refreshIntervalMs(2), 2000);
  assert.equal(refreshIntervalMs(0.75), 750);
  assert.equal(refreshIntervalMs(undefined), 2000);
  assert.equal(refreshIntervalMs(null), 2000);
  assert.equal(refreshIntervalMs('5'), 2000);
  assert.equal(refreshIntervalMs(NaN), 2000);
  assert.equal(refreshIntervalMs(0), 500);
  assert.equal(refreshIntervalMs(-3), 500);
  assert.equal(refreshIntervalMs(1e9), 600000);
});

test('the settings schema and the panel agree on default and bounds', () => {
  // compiled to lib-test/__tests__/, two levels below the package root
  const schema = JSON.parse(
    readFileSync(join(__dirname, '..', '..', 'schema', 'plugin.json'), 'utf8')
  );
  const prop = schema.properties.refreshInterval;
  assert.equal(refreshIntervalMs(prop.default), 2000);
  assert.equal(refreshIntervalMs(prop.minimum), 500);
  assert.equal(refreshIntervalMs(prop.maximum), 600000);
  assert.equal(prop.type, 'number');
  assert.equal(prop.default, REFRESH_INTERVAL.defaultS);
  assert.equal(prop.minimum, REFRESH_INTERVAL.minS);
  assert.equal(prop.maximum, REFRESH_INTERVAL.maxS);
});

test('server-sent events parse across chunk boundaries', () => {
  const a = parseSSE('data: {"lines": ["a"]}\n\ndata: {"li');
  assert.deepEqual(a.events, ['{"lines": ["a"]}']);
  const b = parseSSE(a.rest + 'nes": ["b"]}\n\n: keep-alive\n\n');
  assert.deepEqual(b.events, ['{"lines": ["b"]}']);
  assert.equal(b.rest, '');
});

test('curl commands go through Jupyter and straight to the engine', () => {
  const c = curlCommand('my model', 'http://h:8888/base/', 'http://127.0.0.1:8080');
  assert.ok(c.includes('http://h:8888/base/torchserve/predictions/my%20model'));
  assert.ok(c.includes('Authorization: token $JUPYTER_TOKEN'));
  assert.ok(c.includes('http://127.0.0.1:8080/predictions/my%20model'));
});

test('an image explanation becomes a signed heatmap summed over channels', () => {
  const map = heatmap([
    [
      [1, -2],
      [0, 0.5]
    ],
    [
      [1, 0],
      [0, 0.5]
    ]
  ]);
  assert.ok(map);
  assert.equal(map.width, 2);
  assert.equal(map.height, 2);
  // pixel (0,0): +2 of bound 2 -> opaque red; (1,0): -2 -> opaque blue; (0,1): 0 -> clear
  assert.deepEqual([...map.rgba.slice(0, 4)], [214, 39, 40, 255]);
  assert.deepEqual([...map.rgba.slice(4, 8)], [31, 119, 180, 255]);
  assert.equal(map.rgba[11], 0);
  assert.equal(map.rgba[15], 128);
  assert.ok(
    heatmap({
      explanations: [
        [
          [
            [1, 2],
            [3, 4]
          ]
        ]
      ]
    })
  ); // KServe v1: [C][H][W] each
  assert.equal(
    heatmap([
      [
        [
          [1, 2],
          [3, 4]
        ]
      ]
    ]),
    null
  ); // a batch of images: not one
  assert.equal(heatmap({ words: ['a'], importances: [1] }), null);
  assert.equal(heatmap([1, 2, 3]), null);
});

test('a text explanation colours each word by its importance', () => {
  const shown = tokens({ words: ['a', 'good', 'film'], importances: [0.1, 0.8, -0.4] });
  assert.ok(shown);
  assert.deepEqual(
    shown.map(t => t.word),
    ['a', 'good', 'film']
  );
  assert.equal(shown[1].color, 'rgba(214, 39, 40, 1.00)');
  assert.equal(shown[2].color, 'rgba(31, 119, 180, 0.50)');
  assert.ok(tokens({ explanations: [{ words: ['x'], importances: [1] }] }));
  assert.equal(tokens([[1, 2]]), null);
});

test('the x-explanation header reads as a few lines', () => {
  const header = JSON.stringify({
    method: 'IntegratedGradients',
    n_steps: 15,
    target: 3,
    target_label: 'three',
    prediction: 7,
    label: '7',
    delta: -0.0076
  });
  assert.deepEqual(explanationFacts(header), [
    'predicted 7',
    'explained toward three (class 3)',
    'convergence delta -0.00760',
    'IntegratedGradients, 15 steps'
  ]);
  assert.deepEqual(explanationFacts(null), []);
  assert.deepEqual(explanationFacts('not json'), []);
});

test('an export writes to NAME-TARGET unless the user names a folder', () => {
  const offer = { targets: ['kserve', 't9k', 'ray'], protocols: ['v1', 'v2'], ray_run: true };
  const form = { target: 't9k', protocol: 'v2', out: '  ', run: true, force: false };
  assert.equal(exportFolder('mnist', 'kserve'), 'mnist-kserve');
  // protocol is KServe's, run is Ray's: neither goes with a T9k export
  assert.deepEqual(exportBody('mnist', form, offer), { to: 't9k', out: 'mnist-t9k' });
  assert.deepEqual(exportBody('mnist', { ...form, target: 'kserve', out: 'deploy/k' }, offer), {
    to: 'kserve',
    out: 'deploy/k',
    protocol: 'v2'
  });
  assert.deepEqual(exportBody('mnist', { ...form, target: 'ray', force: true }, offer), {
    to: 'ray',
    out: 'mnist-ray',
    run: true,
    force: true
  });
  // no Ray beside the server: "run" is never sent, whatever the form says
  assert.deepEqual(exportBody('mnist', { ...form, target: 'ray' }, { ...offer, ray_run: false }), {
    to: 'ray',
    out: 'mnist-ray'
  });
});

test('an export folder outside the Jupyter root is refused before the request', () => {
  assert.equal(exportFolderError('mnist-kserve'), null);
  assert.equal(exportFolderError('deploy/mnist'), null);
  assert.equal(exportFolderError(''), null);
  assert.ok(exportFolderError('/tmp/x')?.includes('relative to the Jupyter root'));
  assert.ok(exportFolderError('~/x')?.includes('relative to the Jupyter root'));
  assert.ok(exportFolderError('../outside')?.includes('inside the Jupyter root'));
  assert.ok(exportFolderError('a/../../b')?.includes('inside the Jupyter root'));
  assert.equal(exportFolderError('a..b'), null);
});

test("an export's answer lists files from the Jupyter root, then notes and next steps", () => {
  const shown = exportLines({
    target: 'ray',
    model: 'mnist',
    versions: ['1.0', '2.0'],
    out: 'mnist-ray',
    files: ['serve_app.py', 'model/mnist.mar'],
    next_steps: [{ what: 'deploy', command: 'serve run serve_config.yaml' }],
    notes: ['one replica per version'],
    url: 'http://127.0.0.1:8000/mnist',
    text: ''
  });
  assert.deepEqual(shown.files, ['mnist-ray/serve_app.py', 'mnist-ray/model/mnist.mar']);
  assert.deepEqual(shown.notes, [
    'Serving at http://127.0.0.1:8000/mnist',
    'one replica per version'
  ]);
  assert.deepEqual(shown.steps, [{ what: 'deploy', command: 'serve run serve_config.yaml' }]);
  assert.equal(shown.summary, 'Exported mnist (1.0, 2.0) for ray: 2 files in mnist-ray/');
  const one = exportLines({
    target: 'kserve',
    model: 'm',
    versions: [],
    out: '.',
    files: ['a.yaml'],
    next_steps: [],
    notes: [],
    text: ''
  });
  assert.deepEqual(one.files, ['a.yaml']);
  assert.equal(one.summary, 'Exported m for kserve: 1 file in ./');
});

test('a held-out report shows its scalar figures kernel beside served, then the agreement', () => {
  const rows = evaluationRows({
    rows: 597,
    task: 'classification',
    agreement: 1,
    served: { accuracy: 0.9431, precision: { '0': 1 }, confusion: [[1]] },
    kernel: { accuracy: 0.9431 }
  });
  assert.deepEqual(rows, [
    { metric: 'accuracy', kernel: '0.9431', served: '0.9431' },
    { metric: 'agreement', kernel: '', served: '100.00 %' }
  ]);
  const reg = evaluationRows({
    rows: 3,
    task: 'regression',
    agreement: 0.5,
    metric_name: 'rmse',
    served: { mse: 0.25, mae: 0.5, r2: 0.1, custom: 0.5 },
    kernel: { mse: 0.25, mae: 0.5, r2: 0.1, custom: 0.5 }
  });
  assert.deepEqual(
    reg.map(r => r.metric),
    ['MSE', 'MAE', 'R²', 'rmse', 'agreement']
  );
});

test('a canary split says the configured share and what was seen', () => {
  assert.equal(
    trafficLine({ role: 'canary', percent: 20, requests: 45, observedPercent: 22.5 }),
    'canary 20 % of the default route · 45 req, 22.5 % seen'
  );
  assert.equal(
    trafficLine({ role: 'default', percent: 80, requests: 0, observedPercent: null }),
    'default 80 % of the default route · no request yet'
  );
});
