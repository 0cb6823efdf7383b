<?php
/**
 * The "UserRelay" panel of a user's edit screen (user-edit.php, profile.php): for each partner
 * site of this site's links, where this user's last change stands (delivered; waiting, and
 * why; refused, with the partner's reason; filtered by a link's rule).
 *
 * Shown to those who may edit users (edit_users and edit_user for this user), where the plugin
 * is configured and serves this blog. The state comes from the relay's signed, read-only,
 * site-scoped user-status call (UserRelay_Relay_Client::user_status()), made server-side with
 * a short timeout; a relay that does not answer is said so, and the page loads anyway. Only
 * this user's entry of the answer is shown; everything printed is escaped.
 *
 * @package UserRelay
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

/**
 * The sync panel on a user's edit screen.
 */
final class UserRelay_User_Panel {

	/** Seconds the edit screen waits for the relay. */
	const TIMEOUT = 3;

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
	 * Adds the panel to both edit screens, where the plugin is configured and serves this blog.
	 */
	public function register(): void {
		if ( ! $this->settings->is_configured() || ! $this->settings->serves_this_blog() ) {
			return;
		}
		add_action( 'show_user_profile', array( $this, 'render' ) );
		add_action( 'edit_user_profile', array( $this, 'render' ) );
	}

	/**
	 * Prints the panel.
	 *
	 * @param WP_User $user The user being edited.
	 */
	public function render( $user ): void {
		if ( ! $user instanceof WP_User || ! current_user_can( 'edit_users' ) || ! current_user_can( 'edit_user', $user->ID ) ) {
			return;
		}
		echo '<h2 id="userrelay">' . esc_html__( 'UserRelay', 'userrelay' ) . '</h2><div class="userrelay-user-status">';
		if ( ! ( new UserRelay_Snapshot( $this->settings ) )->reported( $user ) ) {
			echo '<p class="userrelay-not-synced">' . esc_html__( 'This user is not synced: privileged users (and, on a network, users of other sites) are never sent to partner sites.', 'userrelay' ) . '</p></div>';
			return;
		}
		$entries = $this->entries( (int) $user->ID );
		if ( is_string( $entries ) ) {
			/* translators: %s: why the relay gave no answer. */
			printf( '<p class="userrelay-user-status-error">%s</p></div>', esc_html( sprintf( __( 'The relay did not answer (%s): where this user\'s changes stand is unknown for now. The page works without it; try again later.', 'userrelay' ), $entries ) ) );
			return;
		}
		if ( ! $entries ) {
			echo '<p class="userrelay-user-status-none">' . esc_html__( 'The relay holds no change of this user for a partner site (none since the links began, or only older ones).', 'userrelay' ) . '</p>';
		} else {
			echo '<table class="widefat striped" style="max-width:60em"><thead><tr><th>' . esc_html__( 'Partner site', 'userrelay' ) . '</th><th>' . esc_html__( 'Link', 'userrelay' ) . '</th><th>' . esc_html__( 'Last change', 'userrelay' ) . '</th><th>' . esc_html__( 'Why', 'userrelay' ) . '</th><th>' . esc_html__( 'When', 'userrelay' ) . '</th></tr></thead><tbody>';
			foreach ( $entries as $entry ) {
				printf(
					'<tr class="userrelay-target" data-target="%s" data-state="%s"><td><code>%s</code></td><td><code>%s</code></td><td>%s</td><td>%s</td><td>%s</td></tr>',
					esc_attr( $entry['target'] ),
					esc_attr( $entry['state'] ),
					esc_html( $entry['target'] ),
					esc_html( $entry['link'] ),
					esc_html( self::state_label( $entry['state'] ) ),
					esc_html( $entry['reason'] ),
					esc_html( $entry['at'] ? wp_date( get_option( 'date_format' ) . ' ' . get_option( 'time_format' ), (int) $entry['at'] ) : '' )
				);
			}
			echo '</tbody></table>';
		}
		$send = wp_nonce_url( add_query_arg( array( 'action' => UserRelay_Users_Screen::ROW_ACTION, 'user' => $user->ID ), admin_url( 'admin-post.php' ) ), UserRelay_Users_Screen::nonce_action( (int) $user->ID ) );
		printf( '<p><a class="button userrelay-send-user" href="%s">%s</a></p></div>', esc_url( $send ), esc_html__( 'Send to partner sites now', 'userrelay' ) );
	}

	/**
	 * This user's entries of the relay's answer, each {target, link, state, reason, at} as
	 * strings and a number; or why there are none (a sentence).
	 *
	 * @param int $user_id User id.
	 * @return array[]|string
	 */
	private function entries( int $user_id ) {
		$answer = ( new UserRelay_Relay_Client( $this->settings ) )->user_status( array( $user_id ), self::TIMEOUT );
		if ( 200 !== $answer['status'] ) {
			return null === $answer['status'] ? (string) $answer['error'] : 'HTTP ' . $answer['status'] . ': ' . UserRelay_Relay_Client::error_text( $answer );
		}
		$view = json_decode( $answer['body'], true );
		if ( ! is_array( $view ) || ! isset( $view['users'] ) || ! is_array( $view['users'] ) ) {
			return __( 'its answer is not the user status it should be', 'userrelay' );
		}
		$mine    = isset( $view['users'][ (string) $user_id ] ) && is_array( $view['users'][ (string) $user_id ] ) ? $view['users'][ (string) $user_id ] : array();
		$entries = array();
		foreach ( $mine as $entry ) {
			if ( ! is_array( $entry ) || ! isset( $entry['target'], $entry['state'] ) ) {
				continue;
			}
			$entries[] = array(
				'target' => (string) $entry['target'],
				'link'   => isset( $entry['link'] ) ? (string) $entry['link'] : '',
				'state'  => (string) $entry['state'],
				'reason' => isset( $entry['reason'] ) ? (string) $entry['reason'] : '',
				'at'     => isset( $entry['at'] ) && is_numeric( $entry['at'] ) ? (float) $entry['at'] : 0.0,
			);
		}
		return $entries;
	}

	/**
	 * What a state means, for the site admin.
	 *
	 * @param string $state delivered, waiting, refused or filtered.
	 */
	private static function state_label( string $state ): string {
		$labels = array(
			'delivered' => __( 'Delivered', 'userrelay' ),
			'waiting'   => __( 'Waiting', 'userrelay' ),
			'refused'   => __( 'Refused by the partner site', 'userrelay' ),
			'filtered'  => __( 'Not sent: filtered by the link\'s rules', 'userrelay' ),
		);
		return isset( $labels[ $state ] ) ? $labels[ $state ] : $state;
	}
}
