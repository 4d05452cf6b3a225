// The microphone side of the widget: an AudioWorkletProcessor that collects the input
// into fixed-size Float32 blocks at the call's sample rate and posts them to the page.
//
// processorOptions:
//   targetRate   the call's sample rate (default 16000)
//   frameSamples samples per posted block (default targetRate / 50: 20 ms)
// When the AudioContext does not run at targetRate (a browser that refused the requested
// rate), the input is resampled by linear interpolation.

class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = (options && options.processorOptions) || {};
    this.targetRate = opts.targetRate || 16000;
    this.frameSamples = opts.frameSamples || Math.round(this.targetRate / 50);
    this.step = sampleRate / this.targetRate; // input samples per output sample
    this.position = 0; // fractional read position into the pending input
    this.previous = 0; // the last input sample of the previous quantum
    this.block = new Float32Array(this.frameSamples);
    this.filled = 0;
    this.running = true;
    this.port.onmessage = (event) => {
      if (event.data && event.data.type === "stop") this.running = false;
    };
  }

  push(sample) {
    this.block[this.filled++] = sample;
    if (this.filled === this.frameSamples) {
      this.port.postMessage(this.block, [this.block.buffer]);
      this.block = new Float32Array(this.frameSamples);
      this.filled = 0;
    }
  }

  process(inputs) {
    if (!this.running) return false;
    const input = inputs[0];
    const channel = input && input[0];
    if (!channel) return true; // not connected yet
    if (this.step === 1) {
      for (let i = 0; i < channel.length; i++) this.push(channel[i]);
      return true;
    }
    // position is relative to channel[0]; index -1 is `previous`
    while (this.position < channel.length - 1) {
      const i = Math.floor(this.position);
      const frac = this.position - i;
      const a = i < 0 ? this.previous : channel[i];
      const b = channel[i + 1];
      this.push(a + (b - a) * frac);
      this.position += this.step;
    }
    this.position -= channel.length;
    this.previous = channel[channel.length - 1];
    return true;
  }
}

registerProcessor("capture", CaptureProcessor);
