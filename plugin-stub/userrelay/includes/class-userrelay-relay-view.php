<?php
/**
 * "At the relay" on the settings page: this site's links (remote, direction, actions, state),
 * its changes queued at the relay and its dead letters, as the relay answers a signed,
 * read-only request about this site only (/overview, UserRelay_Relay_Client::overview()).
 *
 * Read only: changes are made in the relay's console, linked from here. Everything printed is
 * escaped; an answer that is not the expected JSON is shown as the relay's error.
 *
 * @package UserRelay
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

/**
 * What the relay says of this site.
 */
final class UserRelay_Relay_View {

	/**
	 * Settings.
	 *
	 * @var UserRelay_Settings
	 */
	private $settings;

	/**
	 * Constructor.
	 *
	 * @param UserRelay_Settings $settings Settings.
	 */
	public function __construct( UserRelay_Settings $settings ) {
		$this->settings = $settings;
	}

	/**
	 * This site's links, their direction, actions and state, and its queued and dead-lettered
	 * changes, as the relay answers a signed, read-only request about this site only. Changes
	 * are made in the relay's console, linked from here.
	 */
	public function render(): void {
		if ( ! $this->settings->is_configured() ) {
			echo '<p>' . esc_html__( 'Set the relay URL, site id and key above to see this site\'s links.', 'userrelay' ) . '</p>';
			return;
		}
		$answer = ( new UserRelay_Relay_Client( $this->settings ) )->overview();
		$view   = 200 === $answer['status'] ? json_decode( $answer['body'], true ) : null;
		if ( ! is_array( $view ) || ! isset( $view['links'], $view['queued'], $view['dead_letters'] ) ) {
			/* translators: %s: the error. */
			printf( '<p class="userrelay-relay-view-error">%s</p>', esc_html( sprintf( __( 'The relay did not answer: %s', 'userrelay' ), null === $answer['status'] ? (string) $answer['error'] : 'HTTP ' . $answer['status'] . ': ' . UserRelay_Relay_Client::error_text( $answer ) ) ) );
			return;
		}
		$directions = array(
			'push'          => __( 'Push to Remote: this site is the source', 'userrelay' ),
			'pull'          => __( 'Pull from Remote: the remote site is the source', 'userrelay' ),
			'bidirectional' => __( 'Bidirectional: both are sources', 'userrelay' ),
		);
		if ( ! $view['links'] ) {
			echo '<p>' . esc_html__( 'This site is not linked to another site yet.', 'userrelay' ) . '</p>';
		} else {
			echo '<table class="widefat striped userrelay-links"><thead><tr><th>' . esc_html__( 'Remote site', 'userrelay' ) . '</th><th>' . esc_html__( 'Direction', 'userrelay' ) . '</th><th>' . esc_html__( 'Outgoing actions', 'userrelay' ) . '</th><th>' . esc_html__( 'Incoming actions', 'userrelay' ) . '</th><th>' . esc_html__( 'State', 'userrelay' ) . '</th></tr></thead><tbody>';
			foreach ( $view['links'] as $link ) {
				printf(
					'<tr data-link="%s" data-state="%s"><td>%s <code>%s</code></td><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>',
					esc_attr( (string) $link['link'] ),
					esc_attr( (string) $link['state'] ),
					esc_html( (string) $link['remote_label'] ),
					esc_html( (string) $link['remote'] ),
					esc_html( isset( $directions[ $link['direction'] ] ) ? $directions[ $link['direction'] ] : (string) $link['direction'] ),
					esc_html( implode( ', ', (array) $link['sends'] ) ),
					esc_html( implode( ', ', (array) $link['takes'] ) ),
					esc_html( (string) $link['state_text'] )
				);
			}
			echo '</tbody></table>';
		}
		/* translators: 1: changes of this site queued at the relay, 2: changes waiting to be applied here. */
		printf( '<p class="userrelay-queued">%s</p>', esc_html( sprintf( __( 'At the relay: %1$d of this site\'s changes queued for delivery; %2$d changes waiting to be applied here.', 'userrelay' ), (int) $view['queued']['sent_by_this_site'], (int) $view['queued']['to_apply_here'] ) ) );
		/* translators: %d: dead letters. */
		printf( '<p class="userrelay-dead">%s</p>', esc_html( sprintf( _n( '%d change of this site was given up on (dead letter).', '%d changes of this site were given up on (dead letters).', (int) $view['dead_letters']['count'], 'userrelay' ), (int) $view['dead_letters']['count'] ) ) );
		if ( $view['dead_letters']['latest'] ) {
			echo '<ul class="userrelay-dead-letters">';
			foreach ( $view['dead_letters']['latest'] as $dead ) {
				printf( '<li>%s</li>', esc_html( sprintf( '#%d %s → %s (%s): %s', (int) $dead['delivery'], (string) $dead['login'], (string) $dead['to'], implode( ', ', (array) $dead['actions'] ), ( $dead['status'] ? 'HTTP ' . (int) $dead['status'] . ' ' : '' ) . (string) $dead['reason'] ) ) );
			}
			echo '</ul>';
		}
		if ( ! empty( $view['console'] ) && is_string( $view['console'] ) ) {
			/* translators: %s: the console's URL. */
			printf( '<p>%s <a class="userrelay-console" href="%s">%s</a></p>', esc_html__( 'To change links, rules or keys, use the relay\'s console (reachable from the relay\'s machine, or through an SSH tunnel):', 'userrelay' ), esc_url( $view['console'] ), esc_html( $view['console'] ) );
		} else {
			echo '<p>' . esc_html__( 'To change links, rules or keys, use the relay\'s console (userrelay serve with an admin token, at /console/ on its admin port).', 'userrelay' ) . '</p>';
		}
	}
}
