/**
 * The Logs tab: a model's log, followed live over server-sent events or read once.
 */
import React, { useEffect, useRef, useState } from 'react';

import { api } from '../api';
import { parseSSE } from '../logic';
import { ModelPicker } from '../widgets';
import { ITabProps } from './tab';

export function LogsTab({ model }: ITabProps): JSX.Element {
  const [name, setName] = useState('');
  const [follow, setFollow] = useState(true);
  const [lines, setLines] = useState<string[]>([]);
  const [error, setError] = useState<string | null>(null);
  const pre = useRef<HTMLPreElement>(null);

  useEffect(() => {
    if (!name) {
      return;
    }
    setLines([]);
    setError(null);
    const controller = new AbortController();
    const run = async () => {
      if (!follow) {
        const text = await api.logs(name, 500);
        setLines(text.split('\n'));
        return;
      }
      const resp = await api.followLogs(name, 500, controller.signal);
      const reader = resp.body!.getReader();
      const decoder = new TextDecoder();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) {
          break;
        }
        buffer += decoder.decode(value, { stream: true });
        const { events, rest } = parseSSE(buffer);
        buffer = rest;
        const added = events.flatMap(e => (JSON.parse(e) as { lines: string[] }).lines);
        if (added.length) {
          setLines(old => old.concat(added).slice(-5000));
        }
      }
    };
    run().catch(e => {
      if (!controller.signal.aborted) {
        setError((e as Error).message);
      }
    });
    return () => controller.abort();
  }, [name, follow]);

  useEffect(() => {
    if (pre.current) {
      pre.current.scrollTop = pre.current.scrollHeight;
    }
  }, [lines]);

  return (
    <div className="jp-TorchServe-section jp-TorchServe-logs">
      <div className="jp-TorchServe-row">
        <ModelPicker
          model={model}
          value={name}
          onChange={setName}
          label="Model whose log to show"
        />
        <label className="jp-TorchServe-check">
          <input
            type="checkbox"
            checked={follow}
            aria-label="Follow new log lines"
            onChange={e => setFollow(e.target.checked)}
          />
          follow
        </label>
      </div>
      {error && (
        <div className="jp-TorchServe-error" role="alert">
          {error}
        </div>
      )}
      <pre
        ref={pre}
        className="jp-TorchServe-pre jp-TorchServe-log"
        aria-label="Model log"
        aria-live="polite"
      >
        {lines.join('\n')}
      </pre>
    </div>
  );
}
