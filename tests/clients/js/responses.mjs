// The Responses API: a response, a stream's event names, and a function tool round trip with
// previous_response_id, as the SDK's README and the function-calling guide write them.
import OpenAI from 'openai';

const client = new OpenAI({ maxRetries: 0, timeout: 20_000 });

const response = await client.responses.create({
  model: 'demo',
  instructions: 'Be brief.',
  input: 'Hello Responses',
});
console.log(`response: ${response.output_text}`);

const stream = await client.responses.create({ model: 'demo', input: 'stream it', stream: true });
const names = [];
let streamed = '';
for await (const event of stream) {
  if (!names.includes(event.type)) names.push(event.type);
  if (event.type === 'response.output_text.delta') streamed += event.delta;
}
console.log(`events: ${names.join(' ')}`);
console.log(`streamed: ${streamed}`);

const tools = [
  {
    type: 'function',
    name: 'weather',
    description: 'The weather in a city.',
    parameters: {
      type: 'object',
      properties: { city: { type: 'string' } },
      required: ['city'],
      additionalProperties: false,
    },
    strict: true,
  },
];
const asked = await client.responses.create({
  model: 'demo',
  input: 'What is the weather in Seoul?',
  tools,
});
const call = asked.output.find((item) => item.type === 'function_call');
console.log(`function call: ${call.name} ${call.arguments}`);
const answered = await client.responses.create({
  model: 'demo',
  previous_response_id: asked.id,
  input: [{ type: 'function_call_output', call_id: call.call_id, output: 'sunny' }],
  tools,
});
console.log(`answer: ${answered.output_text}`);
