// A streamed chat completion, read as the SDK's async iterator, with usage at the end; then the
// same through the SDK's stream helper.
import OpenAI from 'openai';

const client = new OpenAI({ maxRetries: 0, timeout: 20_000 });

const stream = await client.chat.completions.create({
  model: 'demo',
  messages: [{ role: 'user', content: 'Stream from Node' }],
  stream: true,
  stream_options: { include_usage: true },
});
const pieces = [];
let usage;
for await (const chunk of stream) {
  if (chunk.choices[0]?.delta?.content) pieces.push(chunk.choices[0].delta.content);
  if (chunk.usage) usage = chunk.usage;
}
console.log(`pieces: ${JSON.stringify(pieces)}`);
console.log(`stream: ${pieces.join('')}`);
console.log(`usage: ${usage.completion_tokens}`);

const helper = client.chat.completions.stream({
  model: 'demo',
  messages: [{ role: 'user', content: 'helper too' }],
});
const final = await helper.finalChatCompletion();
console.log(`helper: ${final.choices[0].message.content}`);
