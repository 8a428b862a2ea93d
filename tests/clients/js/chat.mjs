// A chat completion, then the tool loop with the SDK's runTools helper, as the openai-node
// README shows them. The SDK reads OPENAI_BASE_URL and OPENAI_API_KEY from the environment.
import OpenAI from 'openai';

const client = new OpenAI({ maxRetries: 0, timeout: 20_000 });

const reply = await client.chat.completions.create({
  model: 'demo',
  messages: [{ role: 'user', content: 'Hello from Node' }],
});
console.log(`chat: ${reply.choices[0].message.content}`);
console.log(`usage: ${reply.usage.prompt_tokens} + ${reply.usage.completion_tokens}`);

const asked = [];
const runner = client.chat.completions.runTools({
  model: 'demo',
  messages: [{ role: 'user', content: 'What is the weather in Seoul?' }],
  tools: [
    {
      type: 'function',
      function: {
        name: 'weather',
        description: 'The weather in a city.',
        parameters: {
          type: 'object',
          properties: { city: { type: 'string' } },
          required: ['city'],
        },
        parse: JSON.parse,
        function: ({ city }) => {
          asked.push(city);
          return 'sunny';
        },
      },
    },
  ],
});
const answer = await runner.finalContent();
console.log(`tool asked: ${JSON.stringify(asked)}`);
console.log(`tool answer: ${answer}`);
